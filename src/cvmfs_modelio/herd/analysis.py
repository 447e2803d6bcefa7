"""What a herd did at the stratum and at the squid, from their request logs.

Request logs are event tables (``sim.reqlog``): one record per request with its path,
start and duration (CLOCK_MONOTONIC ns), body bytes, HTTP status and, for squid, ``aux``
1 for a cache hit.  Only *data objects* count (``/data/xx/...``, chunks ``P`` and whole
files; catalogs ``C`` and the manifest are what a mount fetches, not the load), and only
requests that started at or after the herd's start signal.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cvmfs_modelio.core.events import EventLog


def is_data_object(path: str) -> bool:
    """A content object the load fetches: under ``/data/``, not a catalog (``...C``)."""
    return "/data/" in path and not path.endswith("C")


@dataclass(frozen=True)
class Requests:
    """Data-object requests of one log after the start signal."""

    starts_ns: np.ndarray  # int64
    ends_ns: np.ndarray
    bytes: np.ndarray
    status: np.ndarray
    hit: np.ndarray  # bool (squid: served from its cache)
    paths: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.paths)

    @property
    def total_bytes(self) -> int:
        return int(self.bytes.sum())

    @property
    def hits(self) -> int:
        return int(self.hit.sum())

    def per_object(self) -> Counter[str]:
        """How many times each object was asked for."""
        return Counter(self.paths)


def data_requests(log: EventLog, since_ns: int) -> Requests:
    """The data-object requests of ``log`` that started at or after ``since_ns``."""
    ev = log.events
    paths = {fid: e.path for fid, e in log.files.items()}
    keep = [
        i
        for i in range(len(ev))
        if int(ev["t_start_ns"][i]) >= since_ns
        and is_data_object(paths.get(int(ev["file_id"][i]), ""))
    ]
    sel = ev[keep] if keep else ev[:0]
    return Requests(
        sel["t_start_ns"].astype(np.int64),
        (sel["t_start_ns"] + sel["duration_ns"]).astype(np.int64),
        sel["length"].astype(np.int64),
        sel["result"].astype(np.int64),
        sel["aux"] == 1,
        tuple(paths[int(f)] for f in sel["file_id"]),
    )


def peak_concurrency(starts_ns: np.ndarray, ends_ns: np.ndarray) -> int:
    """Most requests in flight at one moment: each in ``[start, end)``, at least 1 ns long
    (a log's resolution can make a short request last 0), so an end at t is before a start
    at t and back-to-back requests never overlap."""
    if len(starts_ns) == 0:
        return 0
    ends_ns = np.maximum(ends_ns, starts_ns + 1)
    times = np.concatenate([ends_ns, starts_ns])
    deltas = np.concatenate([-np.ones(len(ends_ns), np.int64), np.ones(len(starts_ns), np.int64)])
    order = np.lexsort((deltas, times))  # by time, ends (-1) first
    return int(np.cumsum(deltas[order]).max())


def percentile(values: Sequence[int], q: float) -> int:
    """The ``q`` quantile (0..1) by the nearest-rank method; -1 for no values."""
    if not values:
        return -1
    s = sorted(values)
    rank = max(1, math.ceil(q * len(s)))
    return int(s[rank - 1])
