"""``cvmfs-modelio warm PATHS... [--parallel N]``: pre-fetch models into the client cache."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns, fmt_rate
from cvmfs_modelio.deploy.warm import warm

SHOWN = ("fetch.n_downloads", "download.sz_transferred_bytes", "fetch.n_invocations")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "warm",
        help="pre-fetch model files into a CVMFS client cache on N handles in parallel",
        description="Fetch every object (chunk, or whole unchunked file) of PATHS (files or "
        "directories) into the CVMFS client cache, and the site squid on the way, by "
        "touching each chunk on N handles in parallel, as a job wrapper would before the "
        "first event.  Works on a real /cvmfs and on `sim mount`.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--parallel",
        type=T.number(int, 1, 1024),
        default=4,
        metavar="N",
        help="handles in parallel",
    )
    p.add_argument("--json", metavar="PATH", help="write the result as JSON ('-': stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_dest(args.json, args.paths)
    res = warm(args.paths, args.parallel, progress=lambda s: print(s, file=sys.stderr, flush=True))
    if args.json != "-":
        rows = [
            [
                f.path,
                fmt_bytes(f.size_bytes),
                str(f.chunks),
                fmt_ns(f.wall_ns),
                fmt_rate(f.size_bytes / max(f.wall_ns, 1) * 1e9),
            ]
            for f in res.files
        ]
        print(format_table(["file", "size", "objects", "time", "rate"], rows))
        total = sum(f.size_bytes for f in res.files)
        print(
            f"{len(res.files)} file(s), {fmt_bytes(total)} on {res.parallel} handle(s) in "
            f"{fmt_ns(res.wall_ns)} ({fmt_rate(total / max(res.wall_ns, 1) * 1e9)})"
        )
        delta = res.counters_delta
        if delta is not None and res.counters_before and res.counters_after:
            print(f"client counters of {res.mount} (before -> after):")
            for k in SHOWN:
                if k in res.counters_after:
                    print(f"  {k}: {res.counters_before.get(k, 0)} -> {res.counters_after[k]}")
        for n in res.notes:
            print(f"note: {n}")
    if args.json:
        write_json(
            args.json,
            {"command": "warm", **res.to_json()},
            schema="warm",
            version=1,
            measured=args.paths,
        )
    return 0
