"""``cvmfs-modelio chunks FILE``: a file's chunk layout, real (CVMFS xattrs) or computed."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from cvmfs_modelio.chunks.layouts import (
    CVMFS_AVG_CHUNK_SIZE,
    CVMFS_MAX_CHUNK_SIZE,
    CVMFS_MIN_CHUNK_SIZE,
    ChunkSpec,
    Layout,
    layout_for,
    read_cvmfs_layout,
    validate_min_avg_max,
)
from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("chunks", help="chunk layout of a file (CVMFS xattrs or a chunker)")
    p.add_argument("file", metavar="FILE")
    for opt, dest, default in (("--min", "min_size", "4MiB"), ("--avg", "avg_size", "8MiB")):
        p.add_argument(
            opt,
            dest=dest,
            type=T.size(),
            metavar="SIZE",
            help=f"xor32 (CVMFS) {opt[2:]} chunk size, bytes (default {default})",
        )
    p.add_argument(
        "--max",
        dest="max_size",
        type=T.size(),
        metavar="SIZE",
        help=f"xor32 (CVMFS) max chunk size, bytes ({units.SIZE_HELP}; default 16MiB)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--fixed",
        type=T.size(1),
        metavar="SIZE",
        help="fixed-size chunks of SIZE bytes (cvmfs_swissknife graft uses 24MiB)",
    )
    g.add_argument(
        "--fastcdc", type=T.min_avg_max(), metavar="MIN/AVG/MAX", help="FastCDC, sizes in bytes"
    )
    g.add_argument(
        "--tensor-aware",
        type=T.min_avg_max(),
        metavar="MIN/AVG/MAX",
        help="cut at ONNX tensor boundaries (of FILE, or of the .onnx beside a .data file), "
        "sizes in bytes",
    )
    g.add_argument(
        "--from-cvmfs", action="store_true", help="the real layout from user.chunk_list only"
    )
    p.add_argument("--list", action="store_true", help="list every chunk")
    p.add_argument("--json", metavar="PATH", help="write the layout as JSON ('-': stdout)")
    p.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace) -> ChunkSpec | None:
    """The chunker the options ask for; None when no option was given."""
    xor_given = any(v is not None for v in (args.min_size, args.avg_size, args.max_size))
    if xor_given and (args.fixed or args.fastcdc or args.from_cvmfs):
        raise UsageError(
            "--min/--avg/--max cannot be combined with --fixed, --fastcdc or --from-cvmfs"
        )
    if args.fixed:
        return ChunkSpec(kind="fixed", size=args.fixed)
    for kind, sizes in (("fastcdc", args.fastcdc), ("tensor-aware", args.tensor_aware)):
        if sizes:
            mn, avg, mx = sizes
            spec = ChunkSpec(kind=kind, min_size=mn, avg_size=avg, max_size=mx)
            try:
                spec.validate()
            except UsageError as e:
                raise UsageError(f"--{kind}: {e}") from None
            return spec
    if xor_given:
        mn = CVMFS_MIN_CHUNK_SIZE if args.min_size is None else args.min_size
        avg = CVMFS_AVG_CHUNK_SIZE if args.avg_size is None else args.avg_size
        mx = CVMFS_MAX_CHUNK_SIZE if args.max_size is None else args.max_size
        try:
            validate_min_avg_max(mn, avg, mx)
        except UsageError as e:
            raise UsageError(f"--min/--avg/--max: {e}") from None
        return ChunkSpec(kind="xor32", min_size=mn, avg_size=avg, max_size=mx)
    return None


def describe(layout: Layout) -> str:
    """The human label of where a layout came from."""
    p = layout.params
    if layout.source == "cvmfs-xattr":
        return f"CVMFS (user.chunk_list, compression {layout.compression or '?'})"
    if layout.source == "fixed":
        return f"fixed {fmt_bytes(p['size'])}"
    if layout.source == "whole":
        return "whole file"
    return f"{layout.source} {fmt_bytes(p['min'])}/{fmt_bytes(p['avg'])}/{fmt_bytes(p['max'])}"


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    check_dest(args.json, [args.file])
    if args.from_cvmfs:
        layout = read_cvmfs_layout(args.file)
    elif spec is None:
        layout = layout_for(args.file)
    else:
        layout = layout_for(args.file, spec, source="compute")
    sizes = layout.sizes
    print(f"{args.file}: {fmt_bytes(layout.file_size)} ({layout.file_size} bytes)")
    print(f"layout: {describe(layout)}")
    if layout.chunked:
        print(
            f"{layout.n_chunks} chunks: min {fmt_bytes(int(sizes.min()))}, "
            f"mean {fmt_bytes(float(sizes.mean()))}, max {fmt_bytes(int(sizes.max()))}"
        )
        if layout.source in ("xor32", "cvmfs-xattr") and "max" in layout.params:
            hard = int(np.sum(sizes[:-1] == layout.params["max"]))
            print(f"hard cuts at max: {hard}")
    else:
        print("not chunked: one object, fetched whole at open()")
    if args.list:
        rows = []
        for i, (o, s) in enumerate(zip(layout.offsets.tolist(), sizes.tolist(), strict=True)):
            row = [str(i), str(o), str(s), fmt_bytes(s)]
            rows.append(row + ([layout.hashes[i]] if layout.hashes is not None else []))
        headers = ["chunk", "offset", "size", ""]
        print(format_table(headers + (["object"] if layout.hashes is not None else []), rows))
    if args.json:
        write_json(
            args.json,
            {"command": "chunks", "file": args.file, **layout.to_dict()},
            schema="chunks",
            version=2,  # 2: units in keys (file_size_bytes, params.min_bytes, offset_bytes, ...)
            measured=[args.file],
        )
    return 0
