"""``cvmfs-modelio probe PATH --pattern P``: read one file in a controlled pattern, time each op."""

from __future__ import annotations

import argparse
import math
from typing import Any

from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.events import write_event_file
from cvmfs_modelio.core.jsonout import check_dest, environment, write_json
from cvmfs_modelio.probe.engine import (
    FADVISE_HINTS,
    MADVISE_HINTS,
    PATTERNS,
    ProbeSummary,
    load_ranges,
    probe,
)

# 2: keys carry their units (file_size_bytes, read_bytes, throughput_bytes_per_s,
# resident_pages_before, params.block_bytes, ...); cold_flush and not_cold added.
PROBE_SCHEMA_VERSION = 2


def _size(what: str) -> Any:
    def parse(text: str) -> int:
        return units.parse_size(text, what)

    return parse


def _int(what: str) -> Any:
    def parse(text: str) -> int:
        try:
            return int(text, 0)
        except ValueError:
            raise UsageError(f"{what}: {text!r} is not a whole number") from None

    return parse


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("probe", help="time every read of a file in a chosen access pattern")
    p.add_argument("path", help="file to read (opened read-only)")
    p.add_argument("--pattern", default="seq", help=f"one of: {', '.join(PATTERNS)}")
    p.add_argument("--block", type=str, default=None, help="bytes per op (1MiB; a page for mmap)")
    p.add_argument("--stride", type=str, default=None, help="bytes between op starts (stride)")
    p.add_argument("--count", type=str, default=None, help="ops of a random pattern")
    p.add_argument("--align", type=str, default=None, help="random offsets are multiples of this")
    p.add_argument("--seed", type=str, default="0", help="seed of the random patterns")
    p.add_argument("--list", dest="list_file", default=None, help="'offset length' lines")
    p.add_argument("--threads", type=str, default="1", help="workers sharing the op list (1-1024)")
    p.add_argument(
        "--fadvise", default=None, help=f"posix_fadvise before the run: {', '.join(FADVISE_HINTS)}"
    )
    p.add_argument(
        "--madvise", default=None, help=f"madvise on the mapping: {', '.join(MADVISE_HINTS)}"
    )
    p.add_argument("--cold", action="store_true", help="evict the file from the page cache first")
    p.add_argument("--faults", action="store_true", help="count page faults per operation")
    p.add_argument(
        "--verify",
        action="store_const",
        const="file",
        default=None,
        help="check every byte read against an independent read of the file",
    )
    p.add_argument("--json", dest="json_out", default=None, help="write the summary to this file")
    p.add_argument("--events", dest="events_out", default=None, help="write the event table here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = args.path
    opt_size = {k: getattr(args, k) for k in ("block", "stride", "align")}
    sizes = {k: None if v is None else _size(f"--{k}")(v) for k, v in opt_size.items()}
    count = None if args.count is None else _int("--count")(args.count)
    seed = _int("--seed")(args.seed)
    threads = _int("--threads")(args.threads)
    ranges = None
    if args.list_file is not None:
        if args.pattern not in ("replay", "mmap-list"):
            raise UsageError(f"{args.list_file}: --list applies to replay and mmap-list only")
        ranges = load_ranges(args.list_file)
    for dest in (args.json_out, args.events_out):
        if dest is not None:
            check_dest(dest)
    res = probe(
        path,
        args.pattern,
        block=sizes["block"],
        stride=sizes["stride"],
        count=count,
        align=sizes["align"],
        seed=seed,
        ranges=ranges,
        threads=threads,
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
