"""A trace against a chunk layout: which chunks a load touches, what must be fetched, how long.

A CVMFS client fetches whole chunks (cvmfs-facts.md §2): a chunked file's chunk is
downloaded on the first read that touches it, an unchunked file's object is
downloaded whole at ``open()``.  Given the events of one file (any vantage point:
probe, preload tracer, FUSE log) and a :class:`~cvmfs_modelio.chunks.layouts.Layout`, this
computes the chunks touched, in first-touch order with their first-touch times,
the bytes requested against the bytes that must be fetched, the read
amplification, and a critical-path estimate of the fetch time.

Everything is vectorised with numpy; the requests of a trace are prepared once
(:func:`requests_from_events`) so that a sweep can evaluate many layouts cheaply.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.chunks.layouts import Layout
from cvmfs_modelio.core.events import Events, Op

READ_OPS = (
    Op.READ,
    Op.PREAD,
    Op.READV,
    Op.PREADV,
    Op.FREAD,
    Op.MMAP_TOUCH,
    Op.PAGE_IN,
    Op.PAGE_FAULT,
    Op.FUSE_READ,
)
"""Ops whose ``[offset, offset + length)`` are file bytes the program read or touched.
PAGE_FAULT (pages mapped in the process: what an mmap-ing loader such as ONNX Runtime
touches, on a warm cache too) counts: on CVMFS each such fault is a FUSE read."""
OPEN_OPS = (Op.OPEN, Op.FOPEN, Op.FUSE_OPEN)

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Requests:
    """The byte ranges one file's trace asks for, in time order.

    ``start``/``end`` are byte offsets (``end`` exclusive, clipped to the file size),
    ``t_ns`` the request start times (ns), ``handle`` a small integer per open handle
    (process and descriptor), ``open_ns`` the time of the first successful open
    (-1 if the trace has none).
    """

    t_ns: I64
    start: I64
    end: I64
    handle: I64
    open_ns: int
    n_events: int

    @property
    def requested_bytes(self) -> int:
        """Sum of the requested lengths (bytes; a byte read twice counts twice)."""
        return int(np.sum(self.end - self.start))

    def unique_bytes(self) -> int:
        """Bytes in the union of the requested ranges."""
        return _union_length(self.start, self.end)


def whole_file_requests(file_size: int) -> Requests:
    """A load that opens the file and reads it once from start to end."""
    one = np.zeros(1, dtype=np.int64)
    return Requests(
        t_ns=one,
        start=one,
        end=np.full(1, file_size, dtype=np.int64),
        handle=one,
        open_ns=0,
        n_events=0,
    )


def requests_from_events(events: Events, file_size: int, file_id: int | None = None) -> Requests:
    """Extract the read requests of one file from an event array.

    Reads are the ops in :data:`READ_OPS` with ``offset >= 0``, ``length > 0`` and
    ``err == 0``; each is ``[offset, min(offset + length, file_size))``.  Events of
    other files are ignored when ``file_id`` is given.
    """
    ev = events if file_id is None else events[events["file_id"] == file_id]
    op = ev["op"]
    ok = ev["err"] == 0
    is_read = np.isin(op, np.array([int(o) for o in READ_OPS], dtype=op.dtype)) & ok
    is_read &= (ev["offset"] >= 0) & (ev["length"] > 0) & (ev["offset"] < file_size)
    opens = ev[np.isin(op, np.array([int(o) for o in OPEN_OPS], dtype=op.dtype)) & ok]
    reads = ev[is_read]
    order = np.argsort(reads["t_start_ns"], kind="stable")
    reads = reads[order]
    start = reads["offset"].astype(np.int64)
    end = np.minimum(start + reads["length"].astype(np.int64), np.int64(file_size))
    key = (reads["pid"].astype(np.int64) << 32) | (reads["fd"].astype(np.int64) & 0xFFFFFFFF)
    _, handle = np.unique(key, return_inverse=True)
    return Requests(
        t_ns=reads["t_start_ns"].astype(np.int64),
        start=start,
        end=end,
        handle=handle.astype(np.int64).reshape(-1),
        open_ns=int(opens["t_start_ns"].min()) if len(opens) else -1,
        n_events=len(ev),
    )


@dataclass(frozen=True)
class FetchModel:
    """Cost of one fetch: ``rtt_ns + bytes / bandwidth`` (bandwidth in bytes/s).

    ``in_flight=None`` models the real client: one chunk in flight per open handle
    (fetches of a handle in series, handles in parallel); ``in_flight=N`` lets N
    fetches run at once in first-touch order.  Either way the link's bandwidth bounds
    the total: at least ``rtt + all bytes / bandwidth``.
    """

    rtt_ns: int = 10_000_000
    bandwidth: float = 100 * 1024 * 1024
    in_flight: int | None = None

    def cost_ns(self, sizes: I64) -> npt.NDArray[np.float64]:
        """Time to fetch objects of these sizes one at a time (ns)."""
        return self.rtt_ns + sizes.astype(np.float64) * (1e9 / self.bandwidth)


@dataclass(frozen=True)
class Analysis:
    """What a trace costs against a layout (bytes, ns)."""

    file_size: int
    n_chunks: int
    chunked: bool
    n_reads: int
    requested_bytes: int
    unique_requested_bytes: int
    chunks_touched: I64  # chunk indices in first-touch order
    first_touch_ns: I64  # time of the first touch, same order
    fetched_bytes: int
    n_fetches: int
    fetch_time_ns: float

    @property
    def amplification(self) -> float:
        """Fetched bytes per distinct requested byte (nan when nothing was requested)."""
        if self.unique_requested_bytes == 0:
            return float("nan")
        return self.fetched_bytes / self.unique_requested_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (bytes, ns)."""
        return {
            "file_size_bytes": self.file_size,
            "n_chunks": self.n_chunks,
            "chunked": self.chunked,
            "n_reads": self.n_reads,
            "requested_bytes": self.requested_bytes,
            "unique_requested_bytes": self.unique_requested_bytes,
            "fetched_bytes": self.fetched_bytes,
            "n_fetches": self.n_fetches,
            # null, not NaN (which is not JSON), when nothing was requested
            "amplification": self.amplification if self.unique_requested_bytes else None,
            "fetch_time_ns": self.fetch_time_ns,
            "chunks_touched": self.chunks_touched.tolist(),
            "first_touch_ns": self.first_touch_ns.tolist(),
        }


def analyze(req: Requests, layout: Layout, model: FetchModel | None = None) -> Analysis:
    """Chunks touched, bytes fetched and fetch-time estimate of ``req`` against ``layout``."""
    model = model or FetchModel()
    unique = req.unique_bytes()
    empty = np.zeros(0, dtype=np.int64)
    if not layout.chunked:
        touched = len(req.start) > 0 or req.open_ns >= 0
        first = [req.open_ns if req.open_ns >= 0 else int(req.t_ns.min())] if touched else []
        fetched = layout.file_size if touched else 0
        cost = model.cost_ns(np.array([fetched], dtype=np.int64)) if touched else np.zeros(1)
        return Analysis(
            file_size=layout.file_size,
            n_chunks=1,
            chunked=False,
            n_reads=len(req.start),
            requested_bytes=req.requested_bytes,
            unique_requested_bytes=unique,
            chunks_touched=np.zeros(1, dtype=np.int64) if touched else empty,
            first_touch_ns=np.array(first, dtype=np.int64),
            fetched_bytes=fetched,
            n_fetches=int(touched),
            fetch_time_ns=float(cost[0]) if touched else 0.0,
        )
    chunk, which = touched_chunks(layout.offsets, req.start, req.end)
    # np.unique keeps the first occurrence; the expansion is in time order.
    ids, first_pos = np.unique(chunk, return_index=True)
    order = np.argsort(first_pos, kind="stable")
    ids = ids[order]
    first_req = which[first_pos[order]]
    sizes = layout.sizes[ids]
    fetch_ns = _critical_path(sizes, req.handle[first_req], model)
    return Analysis(
        file_size=layout.file_size,
        n_chunks=layout.n_chunks,
        chunked=True,
        n_reads=len(req.start),
        requested_bytes=req.requested_bytes,
        unique_requested_bytes=unique,
        chunks_touched=ids.astype(np.int64),
        first_touch_ns=req.t_ns[first_req],
        fetched_bytes=int(sizes.sum()),
        n_fetches=len(ids),
        fetch_time_ns=fetch_ns,
    )


def touched_chunks(offsets: I64, start: I64, end: I64) -> tuple[I64, I64]:
    """Every (chunk index, request index) pair where request ``[start, end)`` overlaps.

    Pairs come in request order, and by chunk within a request.
    """
    if len(start) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lo = np.searchsorted(offsets, start, side="right") - 1
    hi = np.searchsorted(offsets, end - 1, side="right") - 1
    counts = hi - lo + 1
    which = np.repeat(np.arange(len(start), dtype=np.int64), counts)
    # Position within each request's run of chunks.
    run_start = np.cumsum(counts) - counts
    step = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(run_start, counts)
    return (np.repeat(lo, counts) + step).astype(np.int64), which


def touched_bytes(offsets: I64, sizes: I64, start: I64, end: I64) -> tuple[int, int]:
    """(number of distinct chunks touched, their total size in bytes)."""
    chunk, _ = touched_chunks(offsets, start, end)
    ids = np.unique(chunk)
    return len(ids), int(sizes[ids].sum())


def _critical_path(sizes: I64, handle: I64, model: FetchModel) -> float:
    if len(sizes) == 0:
        return 0.0
    cost = model.cost_ns(sizes)
    floor = model.rtt_ns + float(sizes.sum()) * (1e9 / model.bandwidth)
    if model.in_flight is None:
        per_handle = np.bincount(handle, weights=cost)
        return max(float(per_handle.max()), floor)
    slots = [0.0] * max(1, model.in_flight)
    for c in cost.tolist():
        t = heapq.heappop(slots)
        heapq.heappush(slots, t + c)
    return max(max(slots), floor)


def _union_length(start: I64, end: I64) -> int:
    s, e = merged_ranges(start, end)
    return int(np.sum(e - s))


def merged_ranges(start: I64, end: I64) -> tuple[I64, I64]:
    """The union of ``[start, end)`` ranges as sorted disjoint ranges."""
    if len(start) == 0:
        return start.copy(), end.copy()
    order = np.argsort(start, kind="stable")
    s = start[order]
    e = np.maximum.accumulate(end[order])
    new_run = np.ones(len(s), dtype=bool)
    new_run[1:] = s[1:] > e[:-1]
    last_of_run = np.append(new_run[1:], True)
    return s[new_run], e[last_of_run]
