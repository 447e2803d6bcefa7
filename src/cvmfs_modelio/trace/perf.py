"""Kernel page-cache events of the traced files, from perf tracepoints (root only).

``filemap:mm_filemap_add_to_page_cache`` (a page entered the page cache: the I/O) and
``filemap:mm_filemap_fault`` (a page fault on a file page that was not mapped yet) are
recorded system-wide with ``perf record -a -k CLOCK_MONOTONIC`` while the command runs, filtered
in the kernel to the inodes under ``--match`` when those are few, and always filtered afterwards
to the (device, inode) of the files in the trace.  They become ``perf.cmtr`` in the trace
directory: source PERF, op PAGE_IN / PAGE_FAULT, one event per page (``length`` = 4 KiB << order),
duration 0 (the timestamp is exact), on the same CLOCK_MONOTONIC as the tracer's events.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvmfs_modelio.core.events import (
    EventLog,
    FileEntry,
    Op,
    Source,
    empty_events,
    write_event_file,
)

TRACEPOINTS = ("filemap:mm_filemap_add_to_page_cache", "filemap:mm_filemap_fault")
PERF_FILE = "perf.cmtr"
UNAVAILABLE_FILE = "perf.unavailable"
MAX_FILTER_INODES = 64
_LINE = re.compile(
    r"^\s*(?P<pid>-?\d+)/(?P<tid>-?\d+)\s+(?P<sec>\d+)\.(?P<ns>\d{9}):\s+filemap:(?P<ev>\w+):"
    r"\s+dev[ =](?P<maj>\d+):(?P<min>\d+) ino[ =](?P<ino>[0-9a-f]+)\b.*?ofs=(?P<ofs>\d+)"
    r"(?:.*?order=(?P<order>\d+))?"
)


def unavailable_reason() -> str | None:
    """Why perf page-cache events cannot be recorded here, or None if they can."""
    if os.geteuid() != 0:
        return "not running as root (system-wide tracepoints need root)"
    perf = shutil.which("perf")
    if perf is None:
        return "the perf tool is not installed (Debian package linux-perf)"
    r = subprocess.run(
        [perf, "list", "--no-desc", "tracepoint"], capture_output=True, text=True, check=False
    )
    for tp in TRACEPOINTS:
        if tp not in r.stdout:
            return f"the kernel has no tracepoint {tp} (perf list: {r.stderr.strip()[:200]})"
    return None


def inodes_under(prefixes: Sequence[str], limit: int = MAX_FILTER_INODES) -> list[int] | None:
    """Inodes of the regular files under ``prefixes``, or None if unknown or more than ``limit``."""
    if not prefixes:
        return None
    found: set[int] = set()
    for p in prefixes:
        path = Path(p)
        paths: Iterator[Path] = path.rglob("*") if path.is_dir() else iter([path])
        for f in paths:
            with contextlib.suppress(OSError):
                st = f.stat()
                if f.is_file():
                    found.add(st.st_ino)
            if len(found) > limit:
                return None
    return sorted(found) or None


@dataclass
class PerfRecorder:
    """A running ``perf record`` that was enabled before the command starts."""

    proc: subprocess.Popen[bytes]
    data: Path
    fifo_dir: Path

    def stop(self) -> None:
        """Stop recording and wait for perf to write its file."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(2)  # SIGINT: perf writes its data and exits
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.fifo_dir, ignore_errors=True)


def start(trace_dir: Path, inodes: list[int] | None) -> PerfRecorder | str:
    """Start perf recording (enabled when this returns), or return why it cannot."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    fifo_dir = Path(tempfile.mkdtemp(prefix="cmio-perf-"))
    ctl, ack = fifo_dir / "ctl", fifo_dir / "ack"
    os.mkfifo(ctl)
    os.mkfifo(ack)
    data = trace_dir / "perf.data"
    cmd = ["perf", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-D", "-1"]
    cmd += ["--control", f"fifo:{ctl},{ack}", "-o", str(data)]
    filt = " || ".join(f"i_ino == {i}" for i in inodes) if inodes else None
    for tp in TRACEPOINTS:
        cmd += ["-e", tp]
        if filt:
            cmd += ["--filter", filt]
    # perf's messages go to a file: a pipe that nobody drains could block it.
    errlog = fifo_dir / "perf.err"
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    rec = PerfRecorder(proc, data, fifo_dir)
    try:
        # Opening the fifos blocks until perf opens its ends; a perf that dies first
        # would leave us blocked, so poll it with a non-blocking open.
        wfd = -1
        for _ in range(2000):
            if proc.poll() is not None:
                msg = errlog.read_text(errors="replace").strip()
                rec.stop()
                return f"perf record failed: {msg.splitlines()[-1] if msg else proc.returncode}"
            try:
                wfd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO until perf opens the reading end
                time.sleep(0.005)
        if wfd < 0:
            rec.stop()
            return "perf record did not start within 10 s"
        os.write(wfd, b"enable\n")
        os.close(wfd)
        with open(ack, "rb") as f:
            f.readline()
    except BaseException:
        rec.stop()
        raise
    return rec


def convert(trace_dir: Path, rec: PerfRecorder, log: EventLog) -> int:
    """Turn perf.data into ``perf.cmtr`` for the files of ``log``; returns events written."""
    keys: dict[tuple[int, int, int], FileEntry] = {}
    for e in log.files.values():
        keys[(os.major(e.dev), os.minor(e.dev), e.inode)] = e
    r = subprocess.run(
        ["perf", "script", "-i", str(rec.data), "-F", "pid,tid,time,event,trace", "--ns"],
        capture_output=True,
        text=True,
        check=False,
    )
    rows: list[tuple[int, int, int, int, int, int, int]] = []
    for line in r.stdout.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        key = (int(m["maj"]), int(m["min"]), int(m["ino"], 16))
        entry = keys.get(key)
        if entry is None:
            continue
        op = Op.PAGE_IN if m["ev"] == "mm_filemap_add_to_page_cache" else Op.PAGE_FAULT
        order = int(m["order"] or 0)
        t = int(m["sec"]) * 1_000_000_000 + int(m["ns"])
        rows.append(
            (t, int(m["pid"]), int(m["tid"]), entry.file_id, int(m["ofs"]), 4096 << order, int(op))
        )
    ev = empty_events(len(rows))
    if rows:
        a = np.array(rows, dtype=np.int64)
        ev["t_start_ns"], ev["pid"], ev["tid"], ev["file_id"] = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
        ev["offset"], ev["length"], ev["op"] = a[:, 4], a[:, 5], a[:, 6]
        ev["result"] = a[:, 5]
        ev["source"] = int(Source.PERF)
    used = {int(f) for f in np.unique(ev["file_id"])} if rows else set()
    files = {f: e for f, e in log.files.items() if f in used}
    meta = {"clock": "CLOCK_MONOTONIC", "source": "perf", "tracepoints": list(TRACEPOINTS)}
    write_event_file(trace_dir / PERF_FILE, EventLog(ev, files, meta))
    rec.data.unlink(missing_ok=True)
    return len(rows)
