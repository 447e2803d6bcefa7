"""``cvmfs-modelio prepare MODEL OUT``: rewrite an ONNX model for publication on CVMFS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.units import fmt_bytes
from cvmfs_modelio.deploy.prepare import ALIGN_CHOICES, PrepareOptions, prepare


def _order(text: str) -> Path:
    if not text.startswith("trace:") or len(text) == len("trace:"):
        raise argparse.ArgumentTypeError(f"{text!r} is not trace:TRACE (a tracer output)")
    return Path(text[len("trace:") :])


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "prepare",
        help="rewrite an ONNX model for CVMFS: external data, alignment, load order, bundle",
        description="Write MODEL rewritten into the new directory OUT: weights externalized "
        "into one .data file (--external-data) with offsets aligned (--align), in the order "
        "a traced load touched them (--order trace:TRACE), with the CVMFS file bundle spec "
        "(--bundle).  The graph is unchanged; ONNX Runtime's outputs on generated inputs are "
        "compared bit for bit before anything appears in OUT.  Never writes outside OUT.",
    )
    p.add_argument("model", metavar="MODEL", help="the .onnx file (its external data beside it)")
    p.add_argument("out", metavar="OUT", help="output directory (new, or empty)")
    p.add_argument(
        "--external-data",
        action="store_true",
        help="move every initializer of 1 KiB or more into OUT/<model>.data",
    )
    p.add_argument(
        "--align",
        type=T.size(),
        default=0,
        metavar="SIZE",
        help="start each external tensor at a multiple of SIZE bytes: 4KiB (a page) or 64KiB "
        "(default 0: packed)",
    )
    p.add_argument(
        "--order",
        type=_order,
        metavar="trace:TRACE",
        help="lay tensors out in the order the traced load (`cvmfs-modelio trace` output) "
        "first touched them (default: the original order)",
    )
    p.add_argument(
        "--bundle",
        action="store_true",
        help="write OUT/.cvmfsbundle-<model> listing the companion files (CVMFS 2.14 file bundle)",
    )
    p.add_argument(
        "--repo-dir",
        metavar="PATH",
        help="repository directory OUT is published as, for absolute bundle entries "
        "(default: entries relative to the spec's directory)",
    )
    p.add_argument(
        "--no-verify", action="store_true", help="skip the ONNX Runtime output comparison"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.align not in ALIGN_CHOICES and args.align & (args.align - 1):
        raise UsageError(f"--align: {args.align} is not a power of two (4KiB or 64KiB)")
    opts = PrepareOptions(
        external_data=args.external_data,
        align=args.align,
        order_trace=args.order,
        bundle=args.bundle,
        repo_dir=args.repo_dir,
        verify=not args.no_verify,
    )
    res = prepare(args.model, args.out, opts, progress=lambda s: print(s, file=sys.stderr))
    print(f"{res.model}  {fmt_bytes(res.model.stat().st_size)}")
    if res.data is not None:
        print(
            f"{res.data}  {fmt_bytes(res.data.stat().st_size)}, {len(res.order)} tensors"
            + (f", aligned to {args.align} bytes" if args.align else ", packed")
            + (f", in the traced load order of {args.order}" if args.order else "")
        )
    if res.bundle is not None:
        print(f"{res.bundle}  bundle spec")
    if res.outputs_compared:
        print(f"ONNX Runtime: {res.outputs_compared} output(s) bit-identical to {args.model}")
    return 0
