"""Read back what a traced run recorded (running it is :mod:`cvmfs_modelio.trace.launch`).

A trace is a directory with one event file per traced process image, named
``<pid>.<n>.cmtr`` (``n`` keeps the names unique when exec keeps the pid), plus, when kernel
tracepoints were recorded, ``kernel/`` and ``kernel.json`` (:mod:`cvmfs_modelio.trace.tracefs`).
Each event file has the format of ``docs/event-format.md``; ``docs/trace-format.md``
describes what the tracer puts in it.  :func:`read_trace` merges everything into one
:class:`EventLog`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio.core.errors import UsageError, os_reason
from cvmfs_modelio.core.events import (
    EventFileError,
    EventLog,
    Events,
    FileEntry,
    Op,
    Source,
    empty_events,
    parse_event_bytes,
)
from cvmfs_modelio.trace.launch import (
    DEFAULT_SAMPLE_US,
    TRACE_SUFFIX,
    exit_status,
    preload_library,
    prepare_trace_dir,
    run_traced,
    traced_env,
)

__all__ = [
    "DEFAULT_SAMPLE_US",
    "READ_OPS",
    "TRACE_SUFFIX",
    "exit_status",
    "merge_logs",
    "preload_events",
    "preload_library",
    "prepare_trace_dir",
    "read_trace",
    "run_traced",
    "trace_files",
    "traced_env",
]

#: Calls that move file bytes into the program (``result`` = bytes returned).
READ_OPS = (Op.READ, Op.PREAD, Op.READV, Op.PREADV, Op.FREAD)


# ------------------------------------------------------------------ reading


def trace_files(path: str | os.PathLike[str]) -> list[Path]:
    """The event files of a trace: a directory's ``*.cmtr`` files, or one file."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise UsageError(f"{p}: no such file or directory")
    files = sorted(p.glob(f"*{TRACE_SUFFIX}"))
    if not files:
        raise UsageError(f"{p}: no trace files (*{TRACE_SUFFIX}) in directory")
    return files


def merge_logs(logs: Sequence[tuple[str, EventLog]]) -> EventLog:
    """Merge per-process logs: one file table keyed by (dev, inode, path), events by time.

    Raises EventFileError if an event names a file id missing from its own file table.
    """
    table: dict[tuple[int, int, str], int] = {}
    files: dict[int, FileEntry] = {}
    parts: list[Events] = []
    processes: list[dict[str, Any]] = []
    for name, log in logs:
        remap: dict[int, int] = {}
        for fid, entry in log.files.items():
            key = (entry.dev, entry.inode, entry.path)
            gid = table.get(key)
            if gid is None:
                gid = len(table)
                table[key] = gid
                files[gid] = FileEntry(gid, entry.path, entry.size, entry.dev, entry.inode)
            remap[fid] = gid
        ev = log.events.copy()
        ids = ev["file_id"]
        used = np.unique(ids[ids >= 0])
        missing = [int(i) for i in used if int(i) not in remap]
        if missing:
            raise EventFileError(f"{name}: events refer to file id {missing[0]} not in its table")
        if used.size:
            lookup = np.full(int(used.max()) + 1, -1, dtype=np.int32)
            for local, gid in remap.items():
                if 0 <= local < lookup.size:
                    lookup[local] = gid
            mask = ids >= 0
            ev["file_id"][mask] = lookup[ids[mask]]
        parts.append(ev)
        processes.append({"file": name, **log.meta})
    events = np.concatenate(parts) if parts else empty_events(0)
    order = np.argsort(events["t_start_ns"], kind="stable")
    meta: dict[str, Any] = {"clock": "CLOCK_MONOTONIC", "processes": processes}
    return EventLog(events=events[order], files=files, meta=meta)


def read_trace(path: str | os.PathLike[str], kernel: bool = True) -> EventLog:
    """Read a trace (directory of per-process files, or one event file) as one EventLog.

    With ``kernel`` (default) the kernel tracepoints of a trace directory are decoded and
    merged (source PERF); ``meta["kernel"]`` is their status (recorded or why not, events
    lost).  A damaged or truncated file raises EventFileError with one line naming it.
    """
    logs: list[tuple[str, EventLog]] = []
    for f in trace_files(path):
        try:
            data = f.read_bytes()
        except OSError as e:
            raise EventFileError(f"{f}: {os_reason(e)}") from None
        logs.append((str(f), parse_event_bytes(data, str(f))))
    log = merge_logs(logs)
    p = Path(path)
    if kernel and p.is_dir():
        _merge_kernel(p, log)
    return log


def _merge_kernel(trace_dir: Path, log: EventLog) -> None:
    from cvmfs_modelio.trace import kernel as kernel_events
    from cvmfs_modelio.trace.tracefs import read_status

    status = read_status(trace_dir)
    if status is None:
        return
    pre = log.events[log.events["source"] == Source.PRELOAD]
    tids = {int(t): int(p) for t, p in zip(pre["tid"], pre["pid"], strict=True)}
    nxt = max(log.files, default=-1) + 1
    dec = kernel_events.decode(trace_dir, log.files, nxt, tids)
    if dec is None:
        log.meta["kernel"] = status
        return
    log.files.update(dec.extra_files)
    status = dict(dec.status)
    status["lost_events"] = int(status.get("lost_events", 0))
    if any(p.get("kernel_gate_timeout_ns") for p in log.meta.get("processes", [])):
        status["gate_timeout"] = True
    log.meta["kernel"] = status
    if dec.events.size:
        events = np.concatenate([log.events, dec.events])
        order = np.argsort(events["t_start_ns"], kind="stable")
        log.events = events[order]


def preload_events(log: EventLog) -> Events:
    """Only the events of the interposer itself (source PRELOAD)."""
    ev: Events = log.events[log.events["source"] == Source.PRELOAD]
    return ev
