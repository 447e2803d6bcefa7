"""``cvmfs-modelio sim publish SRC_DIR STORE``: publish a tree into an emulated CVMFS store."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns, fmt_rate
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
    for opt, dest, what, default in (
        ("--min", "min_size", "minimum", "4MiB"),
        ("--avg", "avg_size", "average", "8MiB"),
        ("--max", "max_size", "maximum", "16MiB"),
    ):
        p.add_argument(
            opt,
            dest=dest,
            type=T.size(),
            metavar="SIZE",
            help=f"{what} chunk size, bytes (CVMFS_{what[:3].upper()}_CHUNK_SIZE; "
            f"default {default})",
        )
    p.add_argument(
        "--no-chunking", action="store_true", help="store every file as one whole object"
    )
    p.add_argument(
        "--compression", choices=("zlib", "none"), default="zlib", help="object compression"
    )
    p.add_argument("--repo", help="repository name (default: kept, or sim.cvmfs.io)")
    p.add_argument(
        "--workers",
        type=T.number(int, 0, 1024),
        default=0,
        metavar="N",
        help="compression threads (default 0: one per CPU)",
    )
    p.add_argument("--json", metavar="PATH", help="write the result and environment as JSON")
    p.set_defaults(func=run)


def params_from_args(args: argparse.Namespace) -> PublishParams:
    sizes = (args.min_size, args.avg_size, args.max_size)
    if args.no_chunking and any(s is not None for s in sizes):
        raise UsageError("--no-chunking cannot be combined with --min/--avg/--max")
    return PublishParams(
        min_size=DEFAULT_MIN if args.min_size is None else args.min_size,
        avg_size=DEFAULT_AVG if args.avg_size is None else args.avg_size,
        max_size=DEFAULT_MAX if args.max_size is None else args.max_size,
        chunking=not args.no_chunking,
        compression=args.compression,
        repository=args.repo,
        workers=args.workers,
    )


_UNIT_KEYS = {
    "min_size": "min_bytes",
    "avg_size": "avg_bytes",
    "max_size": "max_bytes",
    "bytes_in": "in_bytes",
    "bytes_referenced": "referenced_bytes",
    "bytes_added": "added_bytes",
}


def _with_units(d: dict[str, Any]) -> dict[str, Any]:
    return {_UNIT_KEYS.get(k, k): v for k, v in d.items()}


def format_result(r: PublishResult) -> str:
    """The human-readable report of a publish."""
    lines = [
        f"published revision {r.revision} of {r.repository} into {r.store}",
        f"  {r.files} files ({r.chunked_files} chunked into {r.chunks} chunks), "
        f"{r.directories} directories, {r.symlinks} symlinks, {fmt_bytes(r.bytes_in)} in"
        + (f", {r.bundle_triggers} bundle trigger(s)" if r.bundle_triggers else ""),
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
    check_dest(args.store, directory=True)
    check_dest(args.json, [args.src_dir, args.store])
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
                "params": _with_units(dataclasses.asdict(params)),
                "result": _with_units(dataclasses.asdict(result)),
            },
            schema="sim.publish",
            version=2,  # 2: units in keys (min_bytes, in_bytes, added_bytes, ...)
            measured=[args.src_dir, args.store],
        )
    return 0
