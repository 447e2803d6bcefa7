"""Run a program under the LD_PRELOAD tracer and read back what it recorded.

A trace is a directory with one event file per traced process image, named
``<pid>.<n>.cmtr`` (``n`` keeps the names unique when exec keeps the pid).  Each file
has the format of ``docs/event-format.md``; ``docs/trace-format.md`` describes what
the tracer puts in it.  :func:`read_trace` merges them into one :class:`EventLog`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from importlib import resources
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

TRACE_SUFFIX = ".cmtr"
DEFAULT_SAMPLE_US = 1000

#: Calls that move file bytes into the program (``result`` = bytes returned).
READ_OPS = (Op.READ, Op.PREAD, Op.READV, Op.PREADV, Op.FREAD)


def preload_library() -> Path:
    """Path of the installed ``libcmio_preload.so`` (inside the package)."""
    lib = Path(str(resources.files("cvmfs_modelio") / "libcmio_preload.so"))
    if not lib.is_file():
        raise UsageError(f"{lib}: tracer library not installed (rebuild the package)")
    return lib


def traced_env(
    trace_dir: Path,
    match: Sequence[str] = (),
    sample_us: int = DEFAULT_SAMPLE_US,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment that runs a program under the tracer, writing into ``trace_dir``.

    ``match`` are path prefixes (empty: everything but /proc, /sys and /dev);
    ``sample_us`` is the page-in sampling interval in microseconds (0: only at munmap and exit).
    """
    for m in match:
        if not m.startswith("/") or ":" in m:
            raise UsageError(f"--match {m}: must be an absolute path prefix without ':'")
    if sample_us < 0:
        raise UsageError(f"--sample-us {sample_us}: must be >= 0")
    env = dict(os.environ if base is None else base)
    lib = str(preload_library())
    old = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{lib}:{old}" if old else lib
    env["CMIO_TRACE_DIR"] = str(trace_dir.resolve())
    env["CMIO_TRACE_SAMPLE_US"] = str(sample_us)
    if match:
        env["CMIO_TRACE_MATCH"] = ":".join(match)
    else:
        env.pop("CMIO_TRACE_MATCH", None)
    env.pop("CMIO_TRACE_WARNED", None)
    return env


def prepare_trace_dir(path: str | os.PathLike[str]) -> Path:
    """Create the trace directory; refuse one that already holds trace files."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise UsageError(f"{d}: exists and is not a directory")
    if d.is_dir() and any(d.glob(f"*{TRACE_SUFFIX}")):
        raise UsageError(f"{d}: already holds a trace (choose another -o)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{d}: cannot create trace directory: {e.strerror}") from None
    return d


def exit_status(returncode: int) -> int:
    """A shell-style exit status: a child killed by signal N gives 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def run_traced(
    command: Sequence[str],
    trace_dir: str | os.PathLike[str],
    match: Sequence[str] = (),
    sample_us: int = DEFAULT_SAMPLE_US,
    perf: str = "auto",
) -> int:
    """Run ``command`` under the tracer (stdin/stdout/stderr inherited); return its exit status.

    ``perf``: "auto" records kernel page-cache events when possible (root), "on" also warns
    on stderr when it is not possible, "off" never records them.  When not recorded, the
    reason is written to ``TRACE/perf.unavailable``.
    """
    if not command:
        raise UsageError("trace: no command given (use: trace [options] -- COMMAND ARGS...)")
    if perf not in ("auto", "on", "off"):
        raise UsageError(f"--perf {perf}: must be auto, on or off")
    d = prepare_trace_dir(trace_dir)
    env = traced_env(d, match, sample_us)
    from cvmfs_modelio.trace import perf as trace_perf

    rec: trace_perf.PerfRecorder | str = "disabled (--perf off)"
    if perf != "off":
        rec = trace_perf.start(d, trace_perf.inodes_under(match))
    if isinstance(rec, str):
        (d / trace_perf.UNAVAILABLE_FILE).write_text(rec + "\n")
        if perf == "on":
            sys.stderr.write(f"cvmfs-modelio trace: perf page-cache events unavailable: {rec}\n")
    try:
        return _run_child(command, env)
    finally:
        if not isinstance(rec, str):
            rec.stop()
            try:
                trace_perf.convert(d, rec, read_trace(d))
            except UsageError as e:
                (d / trace_perf.UNAVAILABLE_FILE).write_text(f"conversion failed: {e}\n")


def _run_child(command: Sequence[str], env: dict[str, str]) -> int:
    # The child gets Ctrl-C from the terminal itself; we only wait for it.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(list(command), env=env)
    except FileNotFoundError:
        signal.signal(signal.SIGINT, old)
        raise UsageError(f"{command[0]}: command not found") from None
    except PermissionError:
        signal.signal(signal.SIGINT, old)
        raise UsageError(f"{command[0]}: permission denied") from None
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        # SIGTERM to us (the CLI turns it into an exception): pass it on, never leave the
        # traced program running on its own.
        proc.terminate()
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGINT, old)
    return exit_status(rc)


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


def read_trace(path: str | os.PathLike[str]) -> EventLog:
    """Read a trace (directory of per-process files, or one event file) as one EventLog.

    A damaged or truncated file raises EventFileError with one line naming it.
    """
    logs: list[tuple[str, EventLog]] = []
    for f in trace_files(path):
        try:
            data = f.read_bytes()
        except OSError as e:
            raise EventFileError(f"{f}: {os_reason(e)}") from None
        logs.append((str(f), parse_event_bytes(data, str(f))))
    return merge_logs(logs)


def preload_events(log: EventLog) -> Events:
    """Only the events of the interposer itself (source PRELOAD)."""
    ev: Events = log.events[log.events["source"] == Source.PRELOAD]
    return ev
