"""``cvmfs-modelio dedup FILES... --config ...``: objects and bytes stored, version updates."""

from __future__ import annotations

import argparse
import os
from typing import Any

from cvmfs_modelio.chunks.dedup import dedup
from cvmfs_modelio.chunks.layouts import parse_chunk_spec
from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("dedup", help="storage and dedup of files (versions) per chunk config")
    p.add_argument("files", nargs="+", metavar="FILE", help="files, successive versions in order")
    p.add_argument(
        "--config",
        action="append",
        type=T.chunk_spec(),
        metavar="SPEC",
        help="a chunker, sizes in bytes: MIN/AVG/MAX (xor32), fastcdc:MIN/AVG/MAX, "
        "tensor-aware:MIN/AVG/MAX, fixed:SIZE or whole; repeatable (default: CVMFS "
        "4MiB/8MiB/16MiB)",
    )
    p.add_argument("--json", metavar="PATH", help="write the results as JSON ('-': stdout)")
    p.set_defaults(func=run)


def short_names(paths: list[str]) -> dict[str, str]:
    """Paths without their common directory, so the table stays readable."""
    if len(paths) < 2:
        return {p: p for p in paths}
    base = os.path.commonpath([os.path.abspath(p) for p in paths])
    if os.path.isfile(base):
        base = os.path.dirname(base)
    return {p: os.path.relpath(os.path.abspath(p), base) for p in paths}


def run(args: argparse.Namespace) -> int:
    specs = args.config or [parse_chunk_spec("4MiB/8MiB/16MiB")]
    check_dest(args.json, args.files)
    results = [dedup(args.files, s) for s in specs]
    rows = []
    for r in results:
        rows.append(
            [
                r.spec.label(),
                str(r.n_references),
                str(r.n_objects),
                fmt_bytes(r.logical_bytes),
                fmt_bytes(r.stored_bytes_no_dedup),
                fmt_bytes(r.stored_bytes),
                f"{r.dedup_ratio:.3f}",
            ]
        )
    print(f"{len(args.files)} file(s); objects zlib level 6, named by SHA-1, as CVMFS stores them")
    print(
        format_table(
            [
                "config",
                "chunks",
                "objects",
                "logical bytes",
                "stored bytes, no dedup",
                "stored bytes",
                "dedup ratio",
            ],
            rows,
        )
    )
    if len(args.files) > 1:
        short = short_names(list(args.files))
        up = []
        for r in results:
            for u in r.updates:
                frac = u.fetch_bytes / u.full_bytes if u.full_bytes else 0.0
                up.append(
                    [
                        r.spec.label(),
                        f"{short[u.old]} -> {short[u.new]}",
                        str(u.new_objects),
                        fmt_bytes(u.fetch_bytes),
                        fmt_bytes(u.full_bytes),
                        f"{frac:.1%}",
                    ]
                )
        print("update: what a client holding the previous file fetches for the next")
        print(
            format_table(
                ["config", "update", "new objects", "bytes fetched", "file bytes", "fetched/file"],
                up,
            )
        )
    if args.json:
        write_json(
            args.json,
            {"command": "dedup", "results": [r.to_dict() for r in results]},
            schema="dedup",
            version=2,  # 2: params.min_bytes, ...
            measured=args.files,
        )
    return 0
