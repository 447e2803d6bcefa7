"""Measure cells: what every executor's task does (``run_cells``).

Setup is shared as far as the cells allow (``cells.Cell`` keys):

- models are generated or located once per run;
- per chunk configuration the models are published once (``sim.publish``) into a store
  of their own and served once (``sim.server``);
- per *series* (same client settings, model and loader: the cold, warm and hot cells of
  one condition) one emulated client is mounted (``sim.mount.SimMount``, WAN emulator in
  front) with its event log on; the series' measurements run in the CVMFS benchmark's
  order, cold, warm, hot, so the warm runs find what the cold ones fetched.

Each measurement prepares its cache state and checks it before the load:

- **cold**: client cache emptied and page cache invalidated (``CvmfsMount.clear_caches``);
  the model files' residency is measured (mincore); opening an unchunked file for that
  downloads it (as on real CVMFS), so the cache is emptied once more, and the client cache
  directory is checked to hold none of the model's objects.  ``cold_verified`` is true
  only when no page was resident and no object was cached;
- **warm**: the page cache of the files dropped (``posix_fadvise``), client cache kept;
  verified when no page was resident and the load fetched nothing;
- **hot**: nothing cleared; verified when pages were resident and the load fetched nothing.

A warm or hot measurement with no load before it in its mount (a resumed series) is
*primed* by one unmeasured load (``primed``).  The load is one child process
(``campaign.loaders``); the client's counters before and after it, and the client's
per-fetch and per-FUSE-read events inside its time window (read from the event log when
the series' mount ends), give what it fetched and touched.

A series is committed to the sink as one batch when its mount has ended.  On Ctrl-C the
mount is still stopped cleanly (its log written), the finished measurements of the
interrupted series are committed, and KeyboardInterrupt propagates: only the measurement
in flight is lost.  Times in ns, sizes in bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cvmfs_modelio.campaign.cells import Cell, CellWork, series
from cvmfs_modelio.campaign.childproc import ChildOutcome, run_child
from cvmfs_modelio.campaign.loaders import LoadResult, get_loader
from cvmfs_modelio.campaign.modelsrc import ModelInstance, materialize
from cvmfs_modelio.campaign.spec import CampaignSpec, ModelSpec
from cvmfs_modelio.campaign.store import PartSink, ResultBatch, utc_now
from cvmfs_modelio.chunks.layouts import Layout, whole_layout
from cvmfs_modelio.core.errors import UsageError

PAGE = os.sysconf("SC_PAGE_SIZE")


class Progress(Protocol):
    """How a run reports itself (the command line renders it; domain code only calls)."""

    def begin(self, total: int) -> None: ...
    def status(self, text: str) -> None: ...
    def advance(self) -> None: ...
    def note(self, text: str) -> None: ...


class NullProgress:
    def begin(self, total: int) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def advance(self) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass
class RunContext:
    """What a task needs besides its cells: identity, scratch space, reporting."""

    campaign: str
    run_id: str
    executor: str
    workdir: Path
    timeout_s: float = 600.0
    task_id: str = ""
    progress: Progress = field(default_factory=NullProgress)


@dataclass
class RunStats:
    measured: int = 0  # measurements committed
    failed: int = 0  # of which not ok
    series: int = 0


# ------------------------------------------------------------------ residency and state


def resident_bytes(paths: Sequence[Path]) -> int:
    """Bytes of ``paths`` resident in the page cache (mincore; opens each file)."""
    from cvmfs_modelio import _native

    total = 0
    for p in paths:
        try:
            pages = _native.probe_resident_pages(str(p))
        except OSError as e:
            raise UsageError(f"{p}: cannot check residency: {e.strerror}") from None
        n = int(np.count_nonzero(pages))
        total += min(n * PAGE, os.stat(p).st_size)
    return total


def evict_local(paths: Sequence[Path]) -> None:
    """Drop the page cache of local files: write back first (DONTNEED keeps dirty pages)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_objects(cache: Path, hashes: Sequence[str]) -> int:
    """How many of the objects ``hashes`` the emulated client's cache directory holds."""
    n = 0
    for h in hashes:
        d = cache / h[:2]
        if d.is_dir() and any(p.name.startswith(h[2:]) for p in d.iterdir()):
            n += 1
    return n


# ------------------------------------------------------------------ the emulated client's log


@dataclass
class _Window:
    """One measurement's load, waiting for the series' event log."""

    row: dict[str, Any]
    start_ns: int
    end_ns: int
    cell: Cell


def _object_hex(path: str) -> tuple[str, str]:
    """``data/ab/cdef...P`` -> (``abcdef...``, kind)."""
    parts = path.split("/")
    name = parts[-1] if parts else path
    prefix = parts[-2] if len(parts) >= 2 else ""
    kind = "whole"
    if name.endswith("P"):
        kind, name = "chunk", name[:-1]
    elif name.endswith("C"):
        kind, name = "catalog", name[:-1]
    return prefix + name, kind


def _attribute(
    log: Any,
    windows: Sequence[_Window],
    layouts: dict[str, Layout],
    objects: dict[str, tuple[str, int]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Fetch, access and read rows of each window; fills the windows' FUSE-derived columns.

    ``reads`` holds every FUSE open and read of a model file and every fetch of a model
    object as a byte range (the cost model replays them under what-if layouts); the lane of
    a FUSE request is the requesting thread (the event's pid field: the caller's tid)."""
    from cvmfs_modelio.core.events import Op, Source

    ev = log.events
    paths = {fid: e.path for fid, e in log.files.items()}
    t0s = ev["t_start_ns"]
    fetch_rows: list[dict[str, Any]] = []
    access_rows: list[dict[str, Any]] = []
    read_rows: list[dict[str, Any]] = []
    for w in windows:
        if w.start_ns < 0:  # nothing was loaded (the preparation failed)
            continue
        inside = (t0s >= w.start_ns) & (t0s <= w.end_ns)
        fe = np.sort(
            ev[inside & (ev["source"] == Source.FETCH) & (ev["op"] == Op.FETCH)], order="t_start_ns"
        )
        mid = w.row["measurement_id"]
        for seq, e in enumerate(fe):
            hexname, kind = _object_hex(paths.get(int(e["file_id"]), ""))
            file, idx = objects.get(hexname, ("", -1))
            lay = layouts.get(file)
            offset = int(lay.offsets[idx]) if lay is not None and idx >= 0 else -1
            if lay is not None and idx >= 0:
                read_rows.append(
                    {
                        "measurement_id": mid,
                        "source": "fetch",
                        "file": file,
                        "offset_bytes": offset,
                        "length_bytes": int(lay.sizes[idx]),
                        "t_ns": int(e["t_start_ns"]) - w.start_ns,
                        "duration_ns": int(e["duration_ns"]),
                        "lane": int(e["tid"]),
                    }
                )
            fetch_rows.append(
                {
                    "measurement_id": mid,
                    "seq": seq,
                    "object": hexname,
                    "kind": kind,
                    "file": file,
                    "chunk_index": idx,
                    "offset_bytes": offset,
                    "compressed_bytes": int(e["length"]),
                    "bytes": max(int(e["result"]), 0),
                    "start_ns": int(e["t_start_ns"]) - w.start_ns,
                    "duration_ns": int(e["duration_ns"]),
                    "thread": int(e["tid"]),
                    "http_status": int(e["aux"]),
                    "ok": int(e["result"]) >= 0,
                    "rtt_ns": w.cell.rtt_ns,
                    "bandwidth_bytes_per_s": w.cell.bandwidth_bytes_per_s,
                    "client_profile": w.cell.client_profile,
                }
            )
        fuse = ev[inside & (ev["source"] == Source.FUSE)]
        fuse = np.sort(fuse[np.isin(fuse["op"], (Op.FUSE_OPEN, Op.FUSE_READ))], order="t_start_ns")
        touched: dict[tuple[str, int], dict[str, Any]] = {}
        requested = 0
        for e in fuse:
            path = paths.get(int(e["file_id"]), "")
            lay = layouts.get(path)
            if lay is None or int(e["err"]) != 0:
                continue
            is_read = int(e["op"]) == Op.FUSE_READ
            off = int(e["offset"]) if is_read else 0
            end = min(off + int(e["length"]), lay.file_size) if is_read else 0
            if is_read and end <= off:
                continue
            read_rows.append(
                {
                    "measurement_id": mid,
                    "source": "fuse-read" if is_read else "fuse-open",
                    "file": path,
                    "offset_bytes": off,
                    "length_bytes": end - off,
                    "t_ns": int(e["t_start_ns"]) - w.start_ns,
                    "duration_ns": int(e["duration_ns"]),
                    "lane": int(e["pid"]),
                }
            )
            if not is_read:
                continue
            requested += end - off
            first = int(np.searchsorted(lay.offsets, off, side="right")) - 1
            last = int(np.searchsorted(lay.offsets, end - 1, side="right")) - 1
            for ci in range(first, last + 1):
                c_lo = int(lay.offsets[ci])
                c_hi = c_lo + int(lay.sizes[ci])
                nb = min(end, c_hi) - max(off, c_lo)
                rec = touched.get((path, ci))
                if rec is None:
                    rec = {
                        "measurement_id": mid,
                        "file": path,
                        "chunk_index": ci,
                        "chunk_offset_bytes": c_lo,
                        "chunk_bytes": c_hi - c_lo,
                        "first_touch_seq": len(touched),
                        "first_touch_ns": int(e["t_start_ns"]) - w.start_ns,
                        "lane": int(e["pid"]),
                        "reads": 0,
                        "bytes": 0,
                        "source": "fuse",
                    }
                    touched[(path, ci)] = rec
                rec["reads"] += 1
                rec["bytes"] += nb
        access_rows.extend(touched.values())
        w.row["chunks_touched"] = len(touched)
        w.row["bytes_requested"] = requested
    return fetch_rows, access_rows, read_rows


# ------------------------------------------------------------------ rows


def _base_row(
    cell: Cell, rep: int, model: ModelInstance, ctx: RunContext, env: str
) -> dict[str, Any]:
    return {
        "measurement_id": str(uuid.uuid4()),
        "cell_key": cell.key,
        "rep": rep,
        "campaign": ctx.campaign,
        "created_utc": "",
        "run_id": ctx.run_id,
        "task_id": ctx.task_id,
        "executor": ctx.executor,
        "model": cell.model,
        "model_path": str(model.entry),
        "model_source": cell.model_source,
        "model_family": model.family,
        "model_format": model.format,
        "model_bytes": model.model_bytes,
        "target": cell.target,
        "chunking": cell.chunk.chunking,
        "chunk_min_bytes": cell.chunk.min_size,
        "chunk_avg_bytes": cell.chunk.avg_size,
        "chunk_max_bytes": cell.chunk.max_size,
        "chunk_label": cell.chunk.label,
        "rtt_ns": cell.rtt_ns,
        "bandwidth_bytes_per_s": cell.bandwidth_bytes_per_s,
        "client_profile": cell.client_profile,
        "prefetch_depth": cell.prefetch_depth,
        "parallel_handles": cell.parallel_handles,
        "cache_state": cell.cache_state,
        "loader": cell.loader,
        "traced": False,  # the runner's loads never run under the LD_PRELOAD tracer
        "ok": False,
        "error": "",
        "session_ns": -1,
        "first_inference_ns": -1,
        "time_to_first_inference_ns": -1,
        "wall_ns": -1,
        "objects_fetched": -1,
        "bytes_fetched": -1,
        "bytes_requested": -1,
        "chunks_total": -1,
        "chunks_touched": -1,
        "objects_total": -1,
        "fuse_reads": -1,
        "fuse_opens": -1,
        "cold_verified": False,
        "state_verified": False,
        "resident_bytes_before": -1,
        "cached_objects_before": -1,
        "primed": False,
        "user_ns": -1,
        "system_ns": -1,
        "max_rss_bytes": -1,
        "minor_faults": -1,
        "major_faults": -1,
        "series_index": -1,
        "load_start_ns": -1,
        "load_average_1m": os.getloadavg()[0],
        "hostname": socket.gethostname(),
        "environment_json": env,
    }


def _fill_child(row: dict[str, Any], out: ChildOutcome) -> None:
    row["wall_ns"] = out.wall_ns
    row["load_start_ns"] = out.start_ns
    row["user_ns"] = out.user_ns
    row["system_ns"] = out.system_ns
    row["max_rss_bytes"] = out.max_rss_bytes
    row["minor_faults"] = out.minor_faults
    row["major_faults"] = out.major_faults


def _fill_load(row: dict[str, Any], res: LoadResult) -> None:
    row["session_ns"] = res.session_ns
    row["first_inference_ns"] = res.first_inference_ns
    row["time_to_first_inference_ns"] = res.time_to_first_inference_ns


def _environment(paths: Sequence[Path]) -> str:
    from cvmfs_modelio.core.environment import environment

    return json.dumps(environment(paths), sort_keys=True)


# ------------------------------------------------------------------ one load


@dataclass
class _Mounted:
    """What a series measures through: files on the target, their layouts, cache control."""

    entry: Path
    files: list[Path]
    layouts: dict[str, Layout]  # repository path (emulated/cvmfs) or path -> layout
    hashes: list[str]
    mount: Any | None  # mounts.CvmfsMount, None on local disk
    cache: Path | None  # the emulated client's cache directory
    loaded: bool = False


def _counters(m: _Mounted) -> dict[str, int]:
    if m.mount is None:
        return {}
    c: dict[str, int] = m.mount.counters()
    return c


def _delta(after: dict[str, int], before: dict[str, int], name: str) -> int:
    if name not in after or name not in before:
        return -1
    return after[name] - before[name]


def _load(cell: Cell, m: _Mounted, timeout_s: float) -> tuple[ChildOutcome, LoadResult | None, str]:
    loader = get_loader(cell.loader)
    out = run_child(loader.argv(m.entry, m.files), timeout_s=timeout_s)
    if out.returncode != 0 or out.timed_out:
        why = f"timed out after {timeout_s:g} s" if out.timed_out else out.last_error_line()
        return out, None, f"loader {cell.loader}: {why}"
    try:
        return out, loader.parse(out.stdout), ""
    except (UsageError, KeyError, ValueError, TypeError) as e:
        return out, None, f"loader {cell.loader}: unreadable result ({e})"


def _prepare(cell: Cell, m: _Mounted, row: dict[str, Any], timeout_s: float) -> str:
    """Put the target into the cell's cache state and record what was checked; error or ""."""
    state = cell.cache_state
    if state in ("warm", "hot") and not m.loaded:
        _out, _res, err = _load(cell, m, timeout_s)
        if err:
            return f"priming load failed: {err}"
        row["primed"] = True
        m.loaded = True
    if state == "cold":
        if m.mount is not None:
            m.mount.clear_caches(m.files)
            before = _counters(m)
            row["resident_bytes_before"] = resident_bytes(m.files)
            if _counters(m).get("fetch.n_downloads") != before.get("fetch.n_downloads"):
                # the residency check opened an unchunked file, which downloads it: empty
                # the client cache again (this can only drop pages, never add them)
                m.mount.clear_caches(m.files)
        else:
            evict_local(m.files)
            row["resident_bytes_before"] = resident_bytes(m.files)
    elif state == "warm":
        if m.mount is not None:
            m.mount.drop_page_cache(m.files)
        else:
            evict_local(m.files)
        row["resident_bytes_before"] = resident_bytes(m.files)
    else:
        row["resident_bytes_before"] = resident_bytes(m.files)
    if m.cache is not None:
        row["cached_objects_before"] = cached_objects(m.cache, m.hashes)
    return ""


def _measure(cell: Cell, m: _Mounted, row: dict[str, Any], timeout_s: float) -> None:
    err = _prepare(cell, m, row, timeout_s)
    if err:
        row["error"] = err
        return
    before = _counters(m)
    out, res, err = _load(cell, m, timeout_s)
    after = _counters(m)
    _fill_child(row, out)
    row["objects_fetched"] = _delta(after, before, "fetch.n_downloads")
    row["bytes_fetched"] = _delta(after, before, "download.sz_transferred_bytes")
    row["fuse_reads"] = _delta(after, before, "cvmfs.n_fs_read")
    row["fuse_opens"] = _delta(after, before, "cvmfs.n_fs_open")
    if m.mount is None:  # local disk: nothing is fetched, there is no client
        row["objects_fetched"] = row["bytes_fetched"] = 0
    if res is None:
        row["error"] = err
        return
    m.loaded = True
    _fill_load(row, res)
    if res.bytes_read >= 0 and m.mount is None:
        row["bytes_requested"] = res.bytes_read
    row["ok"] = True
    _verify(cell, row)


def _verify(cell: Cell, row: dict[str, Any]) -> None:
    resident = row["resident_bytes_before"]
    fetched = row["objects_fetched"]
    cached = row["cached_objects_before"]
    if cell.cache_state == "cold":
        # a real client's cache cannot be listed here: its first load must fetch
        no_cache = cached == 0 if cached >= 0 else fetched > 0 or cell.target == "local"
        row["cold_verified"] = resident == 0 and no_cache
        row["state_verified"] = row["cold_verified"]
    elif cell.cache_state == "warm":
        row["state_verified"] = resident == 0 and fetched == 0
    else:
        row["state_verified"] = resident > 0 and fetched == 0


# ------------------------------------------------------------------ series


def _commit(
    sink: PartSink,
    windows: list[_Window],
    log_path: Path | None,
    layouts: dict[str, Layout],
    objects: dict[str, tuple[str, int]],
    stats: RunStats,
) -> None:
    if not windows:
        return
    fetches: list[dict[str, Any]] = []
    accesses: list[dict[str, Any]] = []
    reads: list[dict[str, Any]] = []
    if log_path is not None:
        from cvmfs_modelio.core.events import read_event_file

        if not log_path.is_file():
            note = "the emulated client wrote no event log"
            for w in windows:
                w.row["ok"] = False
                w.row["error"] = w.row["error"] or note
        else:
            fetches, accesses, reads = _attribute(
                read_event_file(log_path), windows, layouts, objects
            )
    now = utc_now()
    for w in windows:
        w.row["created_utc"] = now
    sink.append(ResultBatch([w.row for w in windows], fetches, accesses, reads))
    stats.measured += len(windows)
    stats.failed += sum(not w.row["ok"] for w in windows)


def _run_series(
    work: Sequence[CellWork],
    model: ModelInstance,
    open_target: Callable[[Path], Any],
    ctx: RunContext,
    sink: PartSink,
    stats: RunStats,
    index: int,
) -> None:
    """One series: a mount (or the target as is), its measurements, one committed batch.

    ``open_target(log_path)`` is a context manager yielding a :class:`_Mounted`; the
    event log at ``log_path`` is complete once it exits.
    """
    log_path = ctx.workdir / f"series-{index}.events"
    windows: list[_Window] = []
    layouts: dict[str, Layout] = {}
    objects: dict[str, tuple[str, int]] = {}
    interrupted: KeyboardInterrupt | None = None
    uses_log = work[0].cell.target == "emulated"
    try:
        with open_target(log_path) as m:
            layouts = m.layouts
            for path, lay in layouts.items():
                for i, h in enumerate(lay.hashes or ()):
                    objects[h] = (path, i)
            env = _environment([m.entry])
            order = 0
            for w in work:
                for rep in w.reps:
                    ctx.progress.status(f"{w.cell.label()} rep {rep + 1}")
                    row = _base_row(w.cell, rep, model, ctx, env)
                    row["chunks_total"] = sum(lay.n_chunks for lay in layouts.values())
                    row["objects_total"] = len(m.hashes) if m.hashes else row["chunks_total"]
                    row["series_index"] = order
                    order += 1
                    _measure(w.cell, m, row, ctx.timeout_s)
                    start = row["load_start_ns"]
                    end = start + row["wall_ns"] if start >= 0 else -1
                    windows.append(_Window(row, start, end, w.cell))
                    ctx.progress.advance()
    except KeyboardInterrupt as e:
        interrupted = e  # re-raised as it came (core.errors.Interrupted keeps its signal)
    finally:
        # Commit what finished, also on an interrupt (the mount has stopped: log complete).
        if windows:
            try:
                _commit(sink, windows, log_path if uses_log else None, layouts, objects, stats)
            finally:
                log_path.unlink(missing_ok=True)
    stats.series += 1
    if interrupted is not None:
        raise interrupted


# ------------------------------------------------------------------ targets


class _EmulatedSeries:
    """Context manager: mount the served store for one series' client settings."""

    def __init__(
        self,
        url: str,
        cell: Cell,
        repo_entry: str,
        model: ModelInstance,
        ctx: RunContext,
        index: int,
    ) -> None:
        self.url = url
        self.cell = cell
        self.repo_entry = repo_entry
        self.model = model
        self.ctx = ctx
        self.index = index
        self._sm: Any = None
        self._dirs: list[Path] = []

    def __call__(self, log_path: Path) -> _EmulatedSeries:
        self.log_path = log_path
        return self

    def __enter__(self) -> _Mounted:
        from cvmfs_modelio.campaign.client import mount_options
        from cvmfs_modelio.mounts import open_mount
        from cvmfs_modelio.sim.mount import SimMount

        mp = self.ctx.workdir / f"mnt-{self.index}"
        cache = self.ctx.workdir / f"cache-{self.index}"
        mp.mkdir()
        self._dirs = [mp, cache]
        c = self.cell
        opts = mount_options(
            cache=cache,
            log=self.log_path,
            rtt_ns=c.rtt_ns,
            bandwidth_bytes_per_s=c.bandwidth_bytes_per_s,
            parallel=c.parallel_handles,
            prefetch=c.prefetch_depth,
            client_profile=c.client_profile,
        )
        sm = SimMount(self.url, mp, opts)
        sm.start()
        self._sm = sm
        try:
            mnt = open_mount(sm.path)
            entry = mnt.locate(self.repo_entry)
            base = self.model.entry.parent
            files = [entry.parent / os.path.relpath(f, base) for f in self.model.files]
            layouts = {mnt.repo_path(f): mnt.layout(f) for f in files}
            hashes = [h for lay in layouts.values() for h in (lay.hashes or ())]
            return _Mounted(entry, files, layouts, hashes, mnt, cache)
        except BaseException:
            self._stop()
            raise

    def _stop(self) -> None:
        sm, self._sm = self._sm, None
        try:
            if sm is not None:
                sm.stop()
        finally:
            for d in self._dirs:
                shutil.rmtree(d, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self._stop()


class _InPlace:
    """Context manager for a real CVMFS path or a local file: the target as it is."""

    def __init__(self, model: ModelInstance, kind: str) -> None:
        self.model = model
        self.kind = kind

    def __call__(self, log_path: Path) -> _InPlace:
        return self

    def __enter__(self) -> _Mounted:
        files = list(self.model.files)
        if self.kind == "cvmfs":
            from cvmfs_modelio.mounts import open_mount

            mnt = open_mount(self.model.entry)
            layouts = {mnt.repo_path(f): mnt.layout(f) for f in files}
            hashes = [h for lay in layouts.values() for h in (lay.hashes or ())]
            return _Mounted(self.model.entry, files, layouts, hashes, mnt, None)
        layouts = {str(f): whole_layout(os.stat(f).st_size) for f in files}
        return _Mounted(self.model.entry, files, layouts, [], None, None)

    def __exit__(self, *exc: object) -> None:
        return None


# ------------------------------------------------------------------ the task


def models_of(spec: CampaignSpec, work: Sequence[CellWork]) -> list[ModelSpec]:
    names = {w.cell.model for w in work}
    return [m for m in spec.models if m.name in names]


def run_cells(
    spec: CampaignSpec, work: Sequence[CellWork], sink: PartSink, ctx: RunContext
) -> RunStats:
    """Measure every (cell, repetition) of ``work`` and commit them to ``sink``.

    Everything this starts (servers, mounts, children) is stopped, also on errors and
    interrupts; scratch files live in ``ctx.workdir``.
    """
    stats = RunStats()
    if not work:
        return stats
    ctx.progress.begin(sum(len(w.reps) for w in work))
    ctx.progress.status("preparing models")
    models = {m.name: materialize(m, ctx.workdir / "models") for m in models_of(spec, work)}
    groups = series(work)
    if spec.target.kind != "emulated":
        for i, g in enumerate(groups):
            model = models[g[0].cell.model]
            _run_series(g, model, _InPlace(model, spec.target.kind), ctx, sink, stats, i)
        return stats
    _run_emulated(spec, groups, models, ctx, sink, stats)
    return stats


def _run_emulated(
    spec: CampaignSpec,
    groups: list[list[CellWork]],
    models: dict[str, ModelInstance],
    ctx: RunContext,
    sink: PartSink,
    stats: RunStats,
) -> None:
    from cvmfs_modelio.campaign.experiments import fuse_unavailable_reason, stage_sources
    from cvmfs_modelio.sim.publish import PublishParams, publish
    from cvmfs_modelio.sim.server import serve

    reason = fuse_unavailable_reason()
    if reason is not None:
        raise UsageError(f"cannot mount the emulated CVMFS: {reason}")
    src = ctx.workdir / "src"
    repo_entry = stage_sources([m.as_model_files() for m in models.values()], src)
    by_publish: dict[Any, list[list[CellWork]]] = {}
    for g in groups:
        by_publish.setdefault(g[0].cell.publish_key, []).append(g)
    index = 0
    for pi, (_key, gs) in enumerate(by_publish.items()):
        chunk = gs[0][0].cell.chunk
        ctx.progress.status(f"publishing [{chunk.label}]")
        store = ctx.workdir / f"store-{pi}"
        params = (
            PublishParams(chunk.min_size, chunk.avg_size, chunk.max_size)
            if chunk.chunking
            else PublishParams(chunking=False)
        )
        publish(src, store, params)
        try:
            with serve(store, server=spec.target.server) as srv:
                for g in gs:
                    cell = g[0].cell
                    model = models[cell.model]
                    target = _EmulatedSeries(
                        srv.url, cell, repo_entry[cell.model], model, ctx, index
                    )
                    _run_series(g, model, target, ctx, sink, stats, index)
                    index += 1
        finally:
            shutil.rmtree(store, ignore_errors=True)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
