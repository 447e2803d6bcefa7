"""What a load asks of the file system, and what that costs over a WAN under any chunk layout.

A :class:`LoadPattern` is one model's recorded load without network: its files, the FUSE opens
and reads of a warm load (client cache full, page cache dropped) with their times and lanes
(the requesting thread: reads of one thread are serial), and that load's time to first
inference.  :func:`touches` maps it onto chunk layouts (measured, or what-if from the
CVMFS-exact chunker): which chunks each lane needs first, in which order, after how much
work.  :func:`simulate_stall` replays those touches against the per-fetch cost model as the
client behaves (cvmfs-facts §2): an unchunked file is fetched whole at ``open()``; a chunk on
its first read, synchronously, one in flight per lane; ``prefetch`` > 0 queues the next N
chunks of the file after each miss to a pool of background fetchers; every transfer shares
one link (FIFO at the link rate).  The predicted cold time is the warm time plus the stall.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.chunks.layouts import Layout
from cvmfs_modelio.stats.costmodel import CostParams

I64 = npt.NDArray[np.int64]
PREFETCH_WORKERS_MAX = 8  # cmio-simfs: min(--parallel, 8) prefetch threads


@dataclass(frozen=True)
class FileInfo:
    """One file of a model: name inside the model directory, size, compressed/raw ratio."""

    name: str
    size: int
    compression_ratio: float = 1.0


@dataclass(frozen=True)
class LoadPattern:
    """A warm load's requests: per request time (ns from session start), file index, byte
    range, lane and whether it is an open (``is_open``); ``baseline_ns`` its time to first
    inference (the compute and local I/O a cold load also pays)."""

    model: str
    files: tuple[FileInfo, ...]
    t_ns: I64
    file: I64
    start: I64
    end: I64
    lane: I64
    is_open: npt.NDArray[np.bool_]
    baseline_ns: float
    end_ns: float = 0.0  # time of the load's last request


@dataclass(frozen=True)
class Touches:
    """First touches of chunks under given layouts.

    ``lanes[i]`` is a list of ``(t_ns, chunk id)`` in time order; chunk ids index
    ``sizes``/``compressed``/``file_of``/``index_in_file``; ``chunked[f]`` says whether file
    ``f`` is chunked (prefetch follows chunks of the same file).
    """

    lanes: tuple[tuple[tuple[int, int], ...], ...]
    sizes: I64
    compressed: npt.NDArray[np.float64]
    file_of: I64
    index_in_file: I64
    first_chunk: I64  # id of chunk 0 of each file
    n_chunks: I64  # chunks per file
    chunked: tuple[bool, ...]

    @property
    def n_fetches(self) -> int:
        return sum(len(lane) for lane in self.lanes)

    def touched_ids(self) -> list[int]:
        return [cid for lane in self.lanes for _t, cid in lane]

    def bytes_fetched(self) -> float:
        """Compressed bytes of the touched chunks (each once)."""
        ids = sorted(set(self.touched_ids()))
        return float(self.compressed[ids].sum()) if ids else 0.0


def touches(pattern: LoadPattern, layouts: list[Layout]) -> Touches:
    """The chunks ``pattern`` touches first under ``layouts`` (one per file, same order)."""
    if len(layouts) != len(pattern.files):
        raise ValueError("one layout per file")
    first = np.cumsum([0] + [lay.n_chunks for lay in layouts])[:-1].astype(np.int64)
    sizes = np.concatenate([lay.sizes for lay in layouts]).astype(np.int64)
    comp = np.concatenate(
        [lay.sizes * fi.compression_ratio for lay, fi in zip(layouts, pattern.files, strict=True)]
    ).astype(np.float64)
    file_of = np.concatenate(
        [np.full(lay.n_chunks, i, dtype=np.int64) for i, lay in enumerate(layouts)]
    )
    index_in = np.concatenate([np.arange(lay.n_chunks, dtype=np.int64) for lay in layouts])
    seen: set[int] = set()
    lanes: dict[int, list[tuple[int, int]]] = {}
    order = np.argsort(pattern.t_ns, kind="stable")
    for i in order.tolist():
        f = int(pattern.file[i])
        lay = layouts[f]
        if pattern.is_open[i]:
            if lay.chunked:
                continue  # open() of a chunked file fetches nothing
            ids = [int(first[f])]
        else:
            s, e = int(pattern.start[i]), int(pattern.end[i])
            if e <= s:
                continue
            if not lay.chunked:
                ids = [int(first[f])]  # already fetched at open; counted there
            else:
                lo = int(lay.chunk_of(s))
                hi = int(lay.chunk_of(e - 1))
                ids = [int(first[f]) + c for c in range(lo, hi + 1)]
        lane = lanes.setdefault(int(pattern.lane[i]), [])
        for cid in ids:
            if cid not in seen:
                seen.add(cid)
                lane.append((int(pattern.t_ns[i]), cid))
    return Touches(
        lanes=tuple(tuple(v) for _k, v in sorted(lanes.items()) if v),
        sizes=sizes,
        compressed=comp,
        file_of=file_of,
        index_in_file=index_in,
        first_chunk=first,
        n_chunks=np.array([lay.n_chunks for lay in layouts], dtype=np.int64),
        chunked=tuple(lay.chunked for lay in layouts),
    )


@dataclass
class _Link:
    params: CostParams
    rtt_ns: float
    bandwidth: float
    free_at: float = 0.0

    def fetch(self, now: float, size: float, comp: float) -> float:
        """Completion time of a fetch started at ``now`` (ns)."""
        data_start = max(now + self.params.latency_ns(self.rtt_ns), self.free_at)
        link = self.params.link_ns(comp, self.bandwidth)
        self.free_at = data_start + link
        # the client processes blocks as they arrive: the slower of link and CPU sets the pace
        return data_start + max(link, self.params.cpu_ns(size))


@dataclass
class _State:
    done_at: dict[int, float] = field(default_factory=dict)  # requested chunks
    queued: deque[int] = field(default_factory=deque)
    queued_set: set[int] = field(default_factory=set)


def simulate_stall(
    t: Touches,
    params: CostParams,
    rtt_ns: float,
    bandwidth: float,
    prefetch: int = 0,
    parallel: int = 16,
) -> float:
    """Extra time (ns) the slowest lane waits for fetches, as the client would fetch them."""
    if t.n_fetches == 0:
        return 0.0
    link = _Link(params, rtt_ns, bandwidth)
    st = _State()
    workers = max(1, min(parallel, PREFETCH_WORKERS_MAX))
    idle = workers
    # events (time, kind, seq, lane, pos/chunk); kind -1 prefetch queued, 0 worker done,
    # 1 lane touch: at equal times queueing and freed workers come before touches
    ev: list[tuple[float, int, int, int, int]] = []
    seq = 0
    delay = [0.0] * len(t.lanes)
    for li, lane in enumerate(t.lanes):
        heapq.heappush(ev, (float(lane[0][0]), 1, seq, li, 0))
        seq += 1

    def dispatch(now: float) -> None:
        nonlocal idle, seq
        while idle > 0 and st.queued:
            cid = st.queued.popleft()
            st.queued_set.discard(cid)
            if cid in st.done_at:
                continue
            done = link.fetch(now, float(t.sizes[cid]), float(t.compressed[cid]))
            st.done_at[cid] = done
            idle -= 1
            heapq.heappush(ev, (done, 0, seq, -1, cid))
            seq += 1

    while ev:
        now, kind, _s, li, pos = heapq.heappop(ev)
        if kind == -1:  # prefetch queued: start what idle workers can take
            dispatch(now)
            continue
        if kind == 0:  # a prefetch worker is free again
            idle += 1
            dispatch(now)
            continue
        lane = t.lanes[li]
        cid = lane[pos][1]
        ready = st.done_at.get(cid)
        miss = ready is None or ready > now  # not in the cache yet (absent or in flight)
        if ready is None:
            if cid in st.queued_set:
                st.queued.remove(cid)
                st.queued_set.discard(cid)
            ready = link.fetch(now, float(t.sizes[cid]), float(t.compressed[cid]))
            st.done_at[cid] = ready
        if miss:
            # cmio-simfs queues the next N chunks after every read that did not find its chunk
            # cached, also when it waited for one already in flight
            f = int(t.file_of[cid])
            if prefetch > 0 and t.chunked[f]:
                last = int(t.first_chunk[f] + t.n_chunks[f])
                for nxt in range(cid + 1, min(cid + 1 + prefetch, last)):
                    if nxt not in st.done_at and nxt not in st.queued_set:
                        st.queued.append(nxt)
                        st.queued_set.add(nxt)
                # queued when the synchronous fetch has completed (as cmio-simfs does)
                heapq.heappush(ev, (ready, -1, seq, -1, -1))
                seq += 1
        wait = max(0.0, ready - now)
        delay[li] += wait
        if pos + 1 < len(lane):
            gap = lane[pos + 1][0] - lane[pos][0]
            heapq.heappush(ev, (now + wait + gap, 1, seq, li, pos + 1))
            seq += 1
    return max(delay)
