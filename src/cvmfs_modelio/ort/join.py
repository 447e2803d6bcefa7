"""Phases × I/O × tensors: what each phase of a model load read, mapped, waited for, fetched.

Every vantage point's events sit on CLOCK_MONOTONIC, so joining is by time:

- **read() bytes**: read-family calls of the model's files by the measured process (source
  PRELOAD), by the call's start;
- **mmap touched**: pages of the model's files that entered the process's page table for the
  first time: kernel ``mm_filemap_fault`` + ``mm_filemap_map_pages`` (the faulting page and
  its fault-around neighbours, exact times; source PERF) when recorded, else the sampler's
  runs (source MINCORE, op PAGE_FAULT) at the end of their window (at most ``--sample-us``
  late, more on a busy machine);
- **paged in**: pages of the model's files that entered the page cache (the I/O): kernel
  ``mm_filemap_add_to_page_cache`` (source PERF), exact time; without kernel tracepoints, the
  mincore PAGE_IN runs of mapped pages (read() page-ins are then not counted: said so);
- **I/O wait**: the union of the intervals the process spent in read-family calls on the
  model's files and in FUSE requests (kernel ``fuse_request_send``..``_end`` of its tasks),
  clipped to the phase: time blocked in I/O, never counted twice;
- **fetches**: chunk downloads of the CVMFS client (source FETCH), by their end; the fetch
  busy time is the union of their intervals;
- **tensors**: the read() ranges and touched pages mapped back to tensors
  (:class:`cvmfs_modelio.models.inspect.ModelMap`): bytes per tensor, and which tensors were
  touched for the first time in the phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.core.events import EventLog, Events, Op, Source
from cvmfs_modelio.models.inspect import ModelMap
from cvmfs_modelio.ort.profile import OrtPhase
from cvmfs_modelio.trace.tracer import READ_OPS

FUSE_OPS = (Op.FUSE_READ, Op.FUSE_OPEN, Op.FUSE_RELEASE, Op.LOOKUP, Op.GETXATTR, Op.NONE)
TOP_TENSORS = 3


@dataclass
class PhaseRecord:
    """One phase of a load: times in ns (CLOCK_MONOTONIC), sizes in bytes."""

    name: str
    depth: int
    source: str
    start_ns: int
    end_ns: int
    wall_ns: int
    read_bytes: int = 0
    read_calls: int = 0
    mmap_touched_bytes: int = 0
    paged_in_bytes: int = 0
    io_wait_ns: int = 0
    fuse_requests: int = 0
    fuse_reads: int = 0
    fuse_wait_ns: int = 0
    fetches: int = 0
    fetch_bytes: int = 0
    fetch_busy_ns: int = 0
    tensors_touched: int = 0
    tensors_first_touched: int = 0
    top_tensors: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NEVER = np.iinfo(np.int64).max
PAGE = 4096


@dataclass
class ReadTouch:
    """Bytes a read-family call returned: ``[offset, offset + length)`` of a file at ``t_ns``."""

    file_id: int
    offset: int
    length: int
    t_ns: int


def _fill_min(first: npt.NDArray[np.int64], events: Events, t: npt.NDArray[np.int64]) -> None:
    """``first[page] = min(first[page], t)`` over the pages each event covers."""
    for off, ln, when in zip(
        events["offset"].tolist(), events["length"].tolist(), t.tolist(), strict=True
    ):
        a, b = off // PAGE, min(first.size, (off + ln + PAGE - 1) // PAGE)
        if b > a:
            np.minimum(first[a:b], when, out=first[a:b])


def union_ns(starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], lo: int, hi: int) -> int:
    """Length of the union of intervals ``[starts, ends)`` clipped to ``[lo, hi)``."""
    if starts.size == 0 or hi <= lo:
        return 0
    s = np.clip(starts, lo, hi)
    e = np.clip(ends, lo, hi)
    keep = e > s
    s, e = s[keep], e[keep]
    if s.size == 0:
        return 0
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    total = 0
    cur_s, cur_e = int(s[0]), int(e[0])
    for a, b in zip(s[1:].tolist(), e[1:].tolist(), strict=True):
        if a > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = a, b
        elif b > cur_e:
            cur_e = b
    return total + cur_e - cur_s


class Joiner:
    """Selects a load's events once; :meth:`phase` computes one phase's record."""

    def __init__(
        self,
        log: EventLog,
        pid: int,
        model_files: Sequence[str],
        tensor_map: ModelMap | None,
    ) -> None:
        ev = log.events
        self.files = {fid for fid, e in log.files.items() if e.path in set(model_files)}
        self.paths = {fid: log.files[fid].path for fid in self.files}
        fmask = np.isin(ev["file_id"], list(self.files)) if self.files else np.zeros(len(ev), bool)
        src, op = ev["source"], ev["op"]
        mine = ev["pid"] == pid
        self.reads: Events = ev[
            fmask & mine & (src == Source.PRELOAD) & np.isin(op, [int(o) for o in READ_OPS])
        ]
        self.faults: Events = ev[fmask & mine & (src == Source.MINCORE) & (op == Op.PAGE_FAULT)]
        self.kernel = bool((log.meta.get("kernel") or {}).get("status") == "recorded")
        if self.kernel:
            self.pageins: Events = ev[fmask & (src == Source.PERF) & (op == Op.PAGE_IN)]
            self.pagein_source = "kernel"
        else:
            self.pageins = ev[fmask & mine & (src == Source.MINCORE) & (op == Op.PAGE_IN)]
            self.pagein_source = "mincore (mapped pages only)"
        fuse = (src == Source.PERF) & np.isin(op, [int(o) for o in FUSE_OPS]) & (ev["offset"] == -1)
        self.fuse: Events = ev[fuse & mine]
        self.fetches: Events = ev[(src == Source.FETCH) & (op == Op.FETCH)]
        # Pages entering the process's page table.  Kernel fault events (the faulting page
        # and its fault-around neighbours) have exact times but miss pages mapped as a whole
        # large folio (PMD); the sampler sees every page but only within its window.  Each
        # page gets the kernel time if there is one, else the sampler's window start, raised
        # to the page's page-cache insertion if that fell inside the window (the fault that
        # needed the page read it).
        kfaults = ev[fmask & mine & (src == Source.PERF) & (op == Op.PAGE_FAULT)]
        self.fault_source = "kernel + mincore sampler" if kfaults.size else "mincore sampler"
        self.page_first, self.sampled_only_bytes, self.max_window_ns = self._page_first(
            kfaults, self.faults, log
        )
        self.read_touches = [
            ReadTouch(int(e["file_id"]), int(e["offset"]), int(e["result"]), int(e["t_start_ns"]))
            for e in self.reads
            if int(e["result"]) > 0 and int(e["offset"]) >= 0
        ]
        self.tensor_map = tensor_map
        self.first_touch = self._first_touch()

    def _page_first(
        self, kfaults: Events, sampled: Events, log: EventLog
    ) -> tuple[dict[int, npt.NDArray[np.int64]], int, int]:
        """Per file: the first time (ns) each page was mapped in (NEVER if not); bytes known
        only from the sampler; the widest sampler window used (ns)."""
        out: dict[int, npt.NDArray[np.int64]] = {}
        sampled_only = 0
        widest = 0
        for fid in self.files:
            size = max(int(log.files[fid].size), 1)
            npages = (size + PAGE - 1) // PAGE
            first = np.full(npages, NEVER, dtype=np.int64)
            _fill_min(
                first,
                kfaults[kfaults["file_id"] == fid],
                kfaults["t_start_ns"][kfaults["file_id"] == fid],
            )
            pin = np.full(npages, NEVER, dtype=np.int64)
            pe = self.pageins[self.pageins["file_id"] == fid]
            _fill_min(pin, pe, pe["t_start_ns"])
            for e in sampled[sampled["file_id"] == fid]:
                off, ln = int(e["offset"]), int(e["length"])
                a, b = off // PAGE, min(npages, (off + ln + PAGE - 1) // PAGE)
                if b <= a:
                    continue
                s0 = int(e["t_start_ns"])
                s1 = s0 + int(e["duration_ns"])
                seg = first[a:b]
                todo = seg == NEVER
                if not todo.any():
                    continue
                p = pin[a:b]
                est = np.where((p >= s0) & (p <= s1), p, s0)
                seg[todo] = est[todo]
                sampled_only += int(todo.sum()) * PAGE
                widest = max(widest, s1 - s0)
            out[fid] = first
        return out, sampled_only, widest

    def _first_touch(self) -> dict[str, int]:
        first: dict[str, int] = {}
        if self.tensor_map is None:
            return first
        for t in self.read_touches:
            for s in self.tensor_map.tensors_in(self.paths[t.file_id], t.offset, t.length):
                first[s.name] = min(first.get(s.name, NEVER), t.t_ns)
        by_path = {self.paths[f]: f for f in self.files}
        for s in self.tensor_map.tensors:
            fid = by_path.get(s.file)
            if fid is None or s.length_bytes <= 0:
                continue
            pages = self.page_first[fid][s.offset_bytes // PAGE : (s.end_bytes + PAGE - 1) // PAGE]
            if pages.size and int(pages.min()) != NEVER:
                first[s.name] = min(first.get(s.name, NEVER), int(pages.min()))
        return first

    def phase(self, p: OrtPhase) -> PhaseRecord:
        lo, hi = p.start_ns, p.end_ns
        r = PhaseRecord(p.name, p.depth, p.source, lo, hi, hi - lo)
        rt = self.reads["t_start_ns"]
        reads = self.reads[(rt >= lo) & (rt < hi)]
        r.read_bytes = int(np.clip(reads["result"], 0, None).sum())
        r.read_calls = int(reads.size)
        r.mmap_touched_bytes = PAGE * sum(
            int(((f >= lo) & (f < hi)).sum()) for f in self.page_first.values()
        )
        pt = self.pageins["t_start_ns"] + self.pageins["duration_ns"]
        r.paged_in_bytes = int(self.pageins["length"][(pt >= lo) & (pt < hi)].sum())
        fs, fe = self.fuse["t_start_ns"], self.fuse["t_start_ns"] + self.fuse["duration_ns"]
        inside = (fs >= lo) & (fs < hi)
        r.fuse_requests = int(inside.sum())
        r.fuse_reads = int((inside & (self.fuse["op"] == Op.FUSE_READ)).sum())
        r.fuse_wait_ns = union_ns(fs, fe, lo, hi)
        rs, re_ = self.reads["t_start_ns"], self.reads["t_start_ns"] + self.reads["duration_ns"]
        r.io_wait_ns = union_ns(np.concatenate([rs, fs]), np.concatenate([re_, fe]), lo, hi)
        xs = self.fetches["t_start_ns"]
        xe = xs + self.fetches["duration_ns"]
        done = (xe >= lo) & (xe < hi)
        r.fetches = int(done.sum())
        r.fetch_bytes = int(self.fetches["length"][done].sum())
        r.fetch_busy_ns = union_ns(xs, xe, lo, hi)
        if self.tensor_map is not None:
            per: dict[str, int] = {}
            for t in self.read_touches:
                if not lo <= t.t_ns < hi:
                    continue
                end = t.offset + t.length
                for s in self.tensor_map.tensors_in(self.paths[t.file_id], t.offset, t.length):
                    ov = min(end, s.end_bytes) - max(t.offset, s.offset_bytes)
                    per[s.name] = per.get(s.name, 0) + ov
            by_path = {self.paths[f]: f for f in self.files}
            for s in self.tensor_map.tensors:
                fid = by_path.get(s.file)
                if fid is None:
                    continue
                a, b = s.offset_bytes // PAGE, (s.end_bytes + PAGE - 1) // PAGE
                pages = self.page_first[fid][a:b]
                n = int(((pages >= lo) & (pages < hi)).sum())
                if n:
                    per[s.name] = per.get(s.name, 0) + min(n * PAGE, s.length_bytes)
            r.tensors_touched = len(per)
            r.tensors_first_touched = sum(1 for t in self.first_touch.values() if lo <= t < hi)
            top = sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TENSORS]
            r.top_tensors = [{"name": n, "bytes": b} for n, b in top]
        return r

    def tensor_first_touches(self, phases: Sequence[OrtPhase]) -> list[dict[str, Any]]:
        """Every touched tensor: name, first touch (ns), the deepest phase holding that time."""
        out = []
        for name, t in sorted(self.first_touch.items(), key=lambda kv: kv[1]):
            holder = [p for p in phases if p.start_ns <= t < p.end_ns]
            deepest = max(holder, key=lambda p: p.depth).name if holder else None
            out.append({"name": name, "first_touch_ns": t, "phase": deepest})
        return out

    def totals(self) -> dict[str, int]:
        """Whole-trace totals of the model's files (bytes)."""
        return {
            "read_bytes": int(np.clip(self.reads["result"], 0, None).sum()),
            "mmap_touched_bytes": PAGE
            * sum(int((f != NEVER).sum()) for f in self.page_first.values()),
            "paged_in_bytes": int(self.pageins["length"].sum()),
            "fuse_requests": int(self.fuse.size),
            "fetches": int(self.fetches.size),
            "fetch_bytes": int(self.fetches["length"].sum()),
        }
