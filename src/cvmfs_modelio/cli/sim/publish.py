"""``cvmfs-modelio sim publish SRC_DIR STORE``: publish a tree into an emulated CVMFS store."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns, fmt_rate, parse_size
from cvmfs_modelio.sim.publish import (
    DEFAULT_AVG,
    DEFAULT_MAX,
    DEFAULT_MIN,
    STAGES,
    PublishParams,
    PublishResult,
    publish,
)


def register(verbs: argparse._SubParsersAction[Any]) -> None:
    p = verbs.add_parser(
        "publish",
        help="publish a directory tree into an emulated CVMFS store",
        description="Write SRC_DIR into STORE as a new revision: objects named and chunked "
        "exactly as the CVMFS publisher does, an SQLite catalog and a manifest.",
    )
    p.add_argument("src_dir", metavar="SRC_DIR")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--min", dest="min_size", help="minimum chunk size (default 4MiB)")
    p.add_argument("--avg", dest="avg_size", help="average chunk size (default 8MiB)")
    p.add_argument("--max", dest="max_size", help="maximum chunk size (default 16MiB)")
    p.add_argument(
        "--no-chunking", action="store_true", help="store every file as one whole object"
    )
    p.add_argument("--compression", choices=("zlib", "none"), default="zlib")
    p.add_argument("--repo", help="repository name (default: kept, or sim.cvmfs.io)")
    p.add_argument("--workers", type=int, default=0, help="compression threads (default: CPUs)")
    p.add_argument("--json", metavar="PATH", help="write the result and environment as JSON")
    p.set_defaults(func=run)


def params_from_args(args: argparse.Namespace) -> PublishParams:
    sizes = (args.min_size, args.avg_size, args.max_size)
    if args.no_chunking and any(s is not None for s in sizes):
        raise UsageError("--no-chunking cannot be combined with --min/--avg/--max")
    if args.workers < 0:
        raise UsageError(f"--workers: {args.workers} is negative")
    return PublishParams(
        min_size=parse_size(args.min_size, "--min") if args.min_size else DEFAULT_MIN,
        avg_size=parse_size(args.avg_size, "--avg") if args.avg_size else DEFAULT_AVG,
        max_size=parse_size(args.max_size, "--max") if args.max_size else DEFAULT_MAX,
        chunking=not args.no_chunking,
        compression=args.compression,
        repository=args.repo,
        workers=args.workers,
    )


def format_result(r: PublishResult) -> str:
    """The human-readable report of a publish."""
    lines = [
        f"published revision {r.revision} of {r.repository} into {r.store}",
        f"  {r.files} files ({r.chunked_files} chunked into {r.chunks} chunks), "
        f"{r.directories} directories, {r.symlinks} symlinks, {fmt_bytes(r.bytes_in)} in",
        f"  objects: {r.objects_referenced} referenced ({fmt_bytes(r.bytes_referenced)} stored), "
        f"{r.objects_new} new",
        f"  bytes added: {r.bytes_added} ({fmt_bytes(r.bytes_added)}) + catalog "
        f"{r.catalog_bytes} ({r.catalog_hash}C)",
        f"  wall time {fmt_ns(r.wall_ns)}, {fmt_rate(r.bytes_in / max(r.wall_ns, 1) * 1e9)}",
        "",
        f"  {'stage':<10}{'time':>12}",
    ]
    for s in STAGES:
        lines.append(f"  {s:<10}{fmt_ns(r.stage_ns.get(s, 0)):>12}")
    lines.append("  (read..write are summed over worker threads)")
    return "\n".join(lines)


class _Progress:
    """One self-overwriting stderr line: files registered so far (at most 10 updates/s)."""

    def __init__(self) -> None:
        self.n = 0
        self.last = 0.0

    def __call__(self, path: str) -> None:
        self.n += 1
        now = time.monotonic()
        if now - self.last >= 0.1:
            self.last = now
            sys.stderr.write(f"\r  {self.n} files published, last {path[-60:]}\x1b[K")
            sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r\x1b[K")


def run(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    check_dest(args.json)
    progress = _Progress() if sys.stderr.isatty() else None
    result = publish(args.src_dir, args.store, params, progress=progress)
    if progress is not None:
        progress.done()
    sys.stdout.write(format_result(result) + "\n")
    if args.json:
        write_json(
            args.json,
            {
                "command": "sim publish",
                "params": dataclasses.asdict(params),
                "result": dataclasses.asdict(result),
            },
            schema="sim.publish",
            measured=[args.src_dir, args.store],
        )
    return 0
