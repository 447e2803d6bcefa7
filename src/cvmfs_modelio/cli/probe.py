"""``cvmfs-modelio probe PATH --pattern P``: read one file in a controlled pattern, time each op."""

from __future__ import annotations

import argparse
import math
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.events import write_event_file
from cvmfs_modelio.core.jsonout import check_dest, environment, write_json
from cvmfs_modelio.probe.engine import (
    FADVISE_HINTS,
    MADVISE_HINTS,
    MAX_THREADS,
    PATTERNS,
    ProbeSummary,
    load_ranges,
    probe,
)

# 2: keys carry their units (file_size_bytes, read_bytes, throughput_bytes_per_s,
# resident_pages_before, params.block_bytes, ...); cold_flush and not_cold added.
PROBE_SCHEMA_VERSION = 2


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("probe", help="time every read of a file in a chosen access pattern")
    p.add_argument("path", help="file to read (opened read-only)")
    p.add_argument(
        "--pattern", default="seq", choices=PATTERNS, help=f"one of: {', '.join(PATTERNS)}"
    )
    p.add_argument(
        "--block",
        type=T.size(1),
        default=None,
        metavar="SIZE",
        help=f"bytes per operation ({units.SIZE_HELP}; default 1MiB, a page for mmap patterns)",
    )
    p.add_argument(
        "--stride",
        type=T.size(1),
        default=None,
        metavar="SIZE",
        help="bytes between operation starts, stride pattern (default: twice --block)",
    )
    p.add_argument(
        "--count",
        type=T.number(int, 1),
        default=None,
        metavar="N",
        help="operations of a random pattern (default: as many as blocks fit in the file)",
    )
    p.add_argument(
        "--align",
        type=T.size(1),
        default=None,
        metavar="SIZE",
        help="random offsets are multiples of this many bytes (default: --block)",
    )
    p.add_argument(
        "--seed", type=T.number(int, 0, 2**64 - 1), default=0, help="seed of the random patterns"
    )
    p.add_argument(
        "--list",
        dest="list_file",
        default=None,
        metavar="FILE",
        help="'offset length' lines in bytes (replay and mmap-list patterns)",
    )
    p.add_argument(
        "--threads",
        type=T.number(int, 1, MAX_THREADS),
        default=1,
        metavar="N",
        help=f"workers sharing the operation list (1-{MAX_THREADS})",
    )
    p.add_argument(
        "--fadvise",
        default=None,
        choices=FADVISE_HINTS,
        help=f"posix_fadvise before the run: {', '.join(FADVISE_HINTS)} (default: none)",
    )
    p.add_argument(
        "--madvise",
        default=None,
        choices=MADVISE_HINTS,
        help=f"madvise on the mapping: {', '.join(MADVISE_HINTS)} (default: none)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="write the file's dirty pages back, evict it from the page cache and check; "
        "refuse to run (exit 1) when pages stay",
    )
    p.add_argument("--faults", action="store_true", help="count page faults per operation")
    p.add_argument(
        "--verify",
        action="store_const",
        const="file",
        default=None,
        help="check every byte read against an independent read of the file",
    )
    p.add_argument(
        "--json", dest="json_out", default=None, metavar="PATH", help="write the summary here"
    )
    p.add_argument(
        "--events",
        dest="events_out",
        default=None,
        metavar="PATH",
        help="write the event table here (docs/event-format.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = args.path
    ranges = None
    if args.list_file is not None:
        if args.pattern not in ("replay", "mmap-list"):
            raise UsageError(f"{args.list_file}: --list applies to replay and mmap-list only")
        ranges = load_ranges(args.list_file)
    for dest in (args.json_out, args.events_out):
        check_dest(dest, [path])
    res = probe(
        path,
        args.pattern,
        block=args.block,
        stride=args.stride,
        count=args.count,
        align=args.align,
        seed=args.seed,
        ranges=ranges,
        threads=args.threads,
        fadvise=args.fadvise,
        madvise=args.madvise,
        cold=args.cold,
        faults=args.faults,
        verify=args.verify,
    )
    s = res.summary
    print(format_summary(s))
    if args.json_out is not None:
        write_json(
            args.json_out,
            {"summary": s.to_dict()},
            schema="probe",
            version=PROBE_SCHEMA_VERSION,
            measured=[args.path],
        )
    if args.events_out is not None:
        log = res.event_log()
        log.meta["environment"] = environment([args.path])
        write_event_file(args.events_out, log)
    return 1 if s.failed_ops or s.verify_bad_bytes else 0


def _res(v: int | str, total: int) -> str:
    return v if isinstance(v, str) else f"{v}/{total} pages"


def format_summary(s: ProbeSummary) -> str:
    """The readable table of one probe run."""
    lat = s.latency_ns
    rows: list[tuple[str, str]] = [
        ("file", f"{s.path} ({units.fmt_bytes(s.file_size)}, {s.file_size} B)"),
        ("pattern", f"{s.pattern}  " + " ".join(f"{k}={v}" for k, v in s.params.items())),
        ("threads", str(s.threads)),
        ("operations", f"{s.ops} ({s.failed_ops} failed)"),
        ("bytes", f"{units.fmt_bytes(s.bytes)} ({s.bytes} B)"),
        ("wall time", units.fmt_ns(s.wall_ns)),
        (
            "throughput",
            units.fmt_rate(s.throughput_bps) if not math.isnan(s.throughput_bps) else "-",
        ),
        ("IOPS", f"{s.iops:,.0f}" if not math.isnan(s.iops) else "-"),
        (
            "latency",
            "  ".join(
                f"{n} {units.fmt_ns(v)}"
                for n, v in (
                    ("min", lat.min),
                    ("p50", lat.p50),
                    ("p90", lat.p90),
                    ("p99", lat.p99),
                    ("p99.9", lat.p999),
                    ("max", lat.max),
                )
            ),
        ),
        (
            "faults",
            "not measured" if s.minflt is None else f"minor {s.minflt}  major {s.majflt}",
        ),
        (
            "resident",
            f"before {_res(s.residency_before, s.total_pages)}  "
            f"after {_res(s.residency_after, s.total_pages)}  ({s.residency_method})",
        ),
    ]
    if s.cold:
        flushed = f"fdatasync {s.cold_flush}"
        if s.cold_evicted:
            rows.append(("cold", f"evicted ({flushed}; 0 pages resident)"))
        else:
            rows.append(("cold", f"asked, not verifiable ({flushed}; residency untrusted)"))
        if s.not_cold is not None:
            rows.append(("NOT COLD", s.not_cold))
    rows.append(("hints", ", ".join(s.hints) if s.hints else "none"))
    if s.verify is not None:
        rows.append(
            ("verify", f"{s.verify}: {s.verify_bad_bytes} bad bytes in {s.verify_bad_ops} ops")
        )
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
