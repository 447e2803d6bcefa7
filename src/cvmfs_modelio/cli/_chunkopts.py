"""Options shared by the chunk-analysis commands: fetch model, traces, layouts."""

from __future__ import annotations

import argparse
import os

import numpy as np

from cvmfs_modelio.chunks.analysis import READ_OPS, FetchModel
from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError, os_error
from cvmfs_modelio.core.events import MAGIC, EventLog, FileEntry

READ_OP_VALUES = frozenset(int(o) for o in READ_OPS)


def add_fetch_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rtt-ms",
        type=T.number(float, 0, 1e6),
        default=10.0,
        metavar="MS",
        help="round-trip time per fetch, milliseconds",
    )
    p.add_argument(
        "--bandwidth",
        type=T.bandwidth(),
        default="100MiB",
        metavar="RATE",
        help=f"link bandwidth ({units.BANDWIDTH_HELP.replace('; 0: unlimited', '')})",
    )
    p.add_argument(
        "--in-flight",
        type=T.number(int, 1),
        default=None,
        metavar="N",
        help="N fetches at once (default: one per open handle, as the real client)",
    )


def fetch_model(args: argparse.Namespace) -> FetchModel:
    if args.bandwidth <= 0:
        raise UsageError(f"--bandwidth: must be positive for a fetch model, got {args.bandwidth}")
    return FetchModel(
        rtt_ns=int(args.rtt_ms * 1e6), bandwidth=float(args.bandwidth), in_flight=args.in_flight
    )


def is_trace(path: str) -> bool:
    """True for a trace: an event file (by its magic) or a tracer's directory of them."""
    if os.path.isdir(path):
        return True
    if os.path.exists(path) and not os.path.isfile(path):
        # open() of a FIFO would block until a writer comes
        raise UsageError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError as e:
        raise os_error(path, e) from None


def load_trace(path: str) -> EventLog:
    """An event file, or a trace directory of per-process event files merged."""
    from cvmfs_modelio.trace.tracer import read_trace

    return read_trace(path)


def read_files(log: EventLog) -> list[FileEntry]:
    """File-table entries that have at least one successful read event."""
    ev = log.events
    ops = np.array(sorted(READ_OP_VALUES), dtype=ev["op"].dtype)
    reads = ev[np.isin(ev["op"], ops) & (ev["err"] == 0)]
    ids = {int(i) for i in np.unique(reads["file_id"])}
    return [log.files[i] for i in sorted(ids) if i in log.files]


def pick_file(log: EventLog, trace: str, wanted: str | None) -> FileEntry:
    """The trace's file that ``--file`` names, or its only file with reads."""
    if wanted is not None:
        for e in log.files.values():
            if e.path == wanted:
                return e
        real = os.path.realpath(wanted)
        for e in log.files.values():
            if os.path.realpath(e.path) == real:
                return e
        raise UsageError(f"{trace}: no file {wanted!r} in the trace's file table")
    candidates = read_files(log)
    if len(candidates) != 1:
        names = ", ".join(e.path for e in candidates[:5]) or "none"
        raise UsageError(
            f"{trace}: {len(candidates)} files with reads ({names}); choose one with --file"
        )
    return candidates[0]
