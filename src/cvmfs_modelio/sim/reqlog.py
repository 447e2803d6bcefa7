"""HTTP request logs as event tables (source HTTP_SERVER, op HTTP_REQUEST).

One record per request: ``file_id`` -> the request path in the file table, ``length`` = body
bytes sent, ``result`` = HTTP status, ``t_start_ns``/``duration_ns`` on CLOCK_MONOTONIC,
``aux`` = injected fault kind (builtin server) or cache hit 1 / miss 0 (squid).  The file
table's size is the object's size once a complete 200 answer was logged (else -1).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from cvmfs_modelio.core.events import EventLog, FileEntry, Op, Source, empty_events

_FIELDS = ("t_start_ns", "duration_ns", "length", "result", "aux", "pid", "tid")


class RequestLog:
    """Thread-safe accumulator of request records (the builtin server writes into one)."""

    def __init__(self, meta: dict[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._rows: list[tuple[int, int, int, int, int, int, int, int]] = []
        self._ids: dict[str, int] = {}
        self._sizes: dict[str, int] = {}  # object size, from a complete 200 answer
        self.meta: dict[str, Any] = {"clock": "CLOCK_MONOTONIC", **(meta or {})}

    def add(
        self,
        path: str,
        t_start_ns: int,
        duration_ns: int,
        body_bytes: int,
        status: int,
        aux: int = 0,
        pid: int = 0,
        tid: int = 0,
    ) -> None:
        """Record one request (times in ns on CLOCK_MONOTONIC, sizes in bytes)."""
        with self._lock:
            fid = self._ids.setdefault(path, len(self._ids))
            if status == 200 and aux == 0:
                self._sizes[path] = body_bytes
            self._rows.append((t_start_ns, duration_ns, body_bytes, status, aux, pid, tid, fid))

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def snapshot(self) -> EventLog:
        """The records so far as an EventLog (a copy), in order of request start."""
        with self._lock:
            rows = sorted(self._rows, key=lambda r: r[0])  # threads log in completion order
            ids = dict(self._ids)
            sizes = dict(self._sizes)
        ev = empty_events(len(rows))
        if rows:
            cols = np.array(rows, dtype=np.int64)
            for i, name in enumerate(_FIELDS):
                ev[name] = cols[:, i]
            ev["file_id"] = cols[:, 7]
        ev["source"] = int(Source.HTTP_SERVER)
        ev["op"] = int(Op.HTTP_REQUEST)
        files = {fid: FileEntry(fid, p, sizes.get(p, -1)) for p, fid in ids.items()}
        return EventLog(events=ev, files=files, meta=dict(self.meta))


def wall_to_monotonic_ns(wall_s: float) -> int:
    """Convert a wall-clock time in seconds (as servers log it) to CLOCK_MONOTONIC ns."""
    offset = time.time_ns() - time.monotonic_ns()
    return round(wall_s * 1e9) - offset
