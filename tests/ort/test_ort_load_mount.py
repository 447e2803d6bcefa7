"""ort-load from the emulated CVMFS stack: fetches, FUSE request times, phases, the timeline.

The store is served out of process (``served``) and mounted with ``cmio-simfs`` and its event
log, so what ort-load infers (chunk downloads from the cache's file times, FUSE requests from
kernel tracepoints) is checked against what the client itself logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.core.events import Op, Source, read_event_file
from cvmfs_modelio.mounts import open_mount
from cvmfs_modelio.ort.load import LoadResult, run_load
from cvmfs_modelio.sim.mount import MountOptions, SimMount
from cvmfs_modelio.sim.publish import PublishParams, publish
from cvmfs_modelio.trace.export import timeline
from cvmfs_modelio.trace.tracer import READ_OPS, read_trace
from tests.ort.conftest import ROOT_ONLY, Models
from tests.sim.simfs_support import served

pytestmark = ROOT_ONLY
MiB = 1 << 20


@dataclass
class Mounted:
    mnt: Path
    log: Path
    src: Path
    sm: SimMount


@pytest.fixture(scope="module")
def mounted(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    from cvmfs_modelio.campaign.experiments import fuse_unavailable_reason

    why = fuse_unavailable_reason()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("ort-mount")
    src = work / "src"
    for d in ("emb", "ext"):
        (src / d).mkdir(parents=True)
    for f in (models.embedded, models.external, models.data, models.safetensors):
        os.link(f, src / f.parent.name / f.name)
    store = work / "store"
    publish(src, store, PublishParams(1 * MiB, 2 * MiB, 4 * MiB))
    mnt = work / "mnt"
    mnt.mkdir()
    log = work / "simfs.cmtr"
    with served(store) as srv:
        sm = SimMount(srv.url, mnt, MountOptions(cache=work / "cache", log=log, rtt_ms=2))
        with sm:
            yield Mounted(mnt, log, src, sm)


def test_cold_embedded_load_fetches_every_chunk_inside_model_loading(
    mounted: Mounted, tmp_path: Path
) -> None:
    model = mounted.mnt / "emb" / "emb.onnx"
    user = str(mounted.src / "emb" / "emb.onnx")
    tdir = tmp_path / "t"
    res = run_load(model, state="cold", trace_dir=tdir, display_name=user)
    assert res.location == "sim" and res.model == user
    run = res.runs[0]
    layout = open_mount(model).layout(model)
    assert run.fetch is not None and run.fetch["chunks"] == layout.n_chunks
    assert run.counters_delta is not None
    assert run.counters_delta["fetch.n_downloads"] == layout.n_chunks
    load = run.phase("model_loading_uri")
    assert load is not None
    assert load.fetches == layout.n_chunks and load.fetch_bytes == model.stat().st_size
    assert load.fuse_requests > 0 and 0 < load.fuse_wait_ns <= load.wall_ns
    assert load.io_wait_ns >= load.fuse_wait_ns
    assert load.read_bytes == model.stat().st_size
    assert load.paged_in_bytes >= model.stat().st_size
    assert run.state["cleared"] == ["client cache", "page cache"]
    # The chunk downloads inferred from the cache's file times are the client's own.
    log = read_trace(tdir)
    mine = log.events[log.events["source"] == Source.FETCH]
    assert sorted(int(e["offset"]) for e in mine) == layout.offsets.tolist()
    # FUSE reads answered by the client carry exactly the bytes read() returned.
    fuse = log.events[(log.events["source"] == Source.PERF) & (log.events["op"] == Op.FUSE_READ)]
    fuse = fuse[fuse["pid"] == run.pid]
    assert int(fuse["result"].sum()) >= model.stat().st_size
    # Every traced read of the model lies inside model_loading_uri.
    pre = log.events[(log.events["source"] == Source.PRELOAD)]
    reads = pre[np.isin(pre["op"], [int(o) for o in READ_OPS])]
    reads = reads[reads["file_id"] == next(f for f, e in log.files.items() if e.path == str(model))]
    assert ((reads["t_start_ns"] >= load.start_ns) & (reads["t_start_ns"] < load.end_ns)).all()


def test_cache_file_times_match_the_clients_own_fetch_log(mounted: Mounted, tmp_path: Path) -> None:
    model = mounted.mnt / "ext" / "ext.onnx"
    res = run_load(model, state="cold", trace_dir=tmp_path / "t")
    run = res.runs[0]
    assert run.fetch is not None
    log = read_trace(tmp_path / "t")
    mine = log.events[log.events["source"] == Source.FETCH]
    # The client writes its log at unmount: remount to read it (same cache, same store).
    url = mounted.sm.url
    mounted.sm.stop()
    client = read_event_file(mounted.log)
    mounted.sm.start()
    assert mounted.sm.url == url
    theirs = client.events[
        (client.events["source"] == Source.FETCH)
        & (client.events["t_start_ns"] >= int(mine["t_start_ns"].min()) - 10_000_000)
        & (client.events["t_start_ns"] <= int(mine["t_start_ns"].max()) + 10_000_000)
    ]
    assert len(theirs) == len(mine) == run.fetch["chunks"]
    ends = np.sort(theirs["t_start_ns"] + theirs["duration_ns"])
    starts = np.sort(theirs["t_start_ns"])
    my_ends = np.sort(mine["t_start_ns"] + mine["duration_ns"])
    my_starts = np.sort(mine["t_start_ns"])
    # Both file times are the coarse clock's: within half a tick of the client's own, plus
    # what lies between its stamps and the file operations (its log's start precedes the
    # creation of the temporary file by the request's set-up; its log's end follows the
    # rename by the quota hand-off and the event's own bookkeeping: each up to ~1.5 ms when
    # the FUSE thread is preempted, seen at load 1-2 as well as on a busy machine).
    from cvmfs_modelio.trace.cache_fetches import coarse_tick_ns

    half = coarse_tick_ns() // 2
    assert np.all(np.abs(my_ends - ends) <= half + 1_500_000), my_ends - ends
    assert np.all(np.abs(my_starts - starts) <= half + 1_500_000), my_starts - starts


def test_warm_load_fetches_nothing_and_hot_reads_nothing_through_fuse(
    mounted: Mounted, tmp_path: Path
) -> None:
    model = mounted.mnt / "emb" / "emb.onnx"
    run_load(model, state="cold", trace=False)
    warm = run_load(model, state="warm").runs[0]
    assert warm.counters_delta is not None and warm.counters_delta["fetch.n_downloads"] == 0
    assert warm.fetch is None and not any("not cold" in n for n in warm.notes)
    # warm: the page cache was dropped, so every byte comes through FUSE from the client cache
    size = model.stat().st_size
    wl = warm.phase("model_loading_uri")
    assert wl is not None and wl.fuse_reads > 0 and wl.paged_in_bytes >= size
    hot = run_load(model, state="hot").runs[0]
    load = hot.phase("model_loading_uri")
    # hot: open and release only (keep_cache), no read reaches the client
    assert load is not None and load.fuse_reads == 0 and load.paged_in_bytes == 0
    assert load.fuse_requests <= 2 and load.read_bytes == size


def _check_timeline(doc: dict[str, object], tracks: set[str]) -> None:
    """The Chrome trace-event structure Perfetto needs, every track present, ts sorted."""
    events = doc["traceEvents"]
    assert isinstance(events, list)
    json.loads(json.dumps(doc))
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    for t in tracks:
        assert any(n.startswith(t) for n in names), (t, names)
    body = [e for e in events if e["ph"] != "M"]
    assert {e["ph"] for e in body} <= {"X", "C"}
    ts = [e["ts"] for e in body]
    assert ts == sorted(ts) and ts[0] >= 0
    for e in body:
        assert isinstance(e["pid"], int) and isinstance(e["ts"], float)
        if e["ph"] == "X":
            assert e["dur"] >= 0 and isinstance(e["tid"], int)
    # Slices of one track never overlap unless nested (Perfetto's rule for complete events).
    by_tid: dict[int, list[tuple[float, float]]] = {}
    for e in body:
        if e["ph"] == "X":
            by_tid.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_tid.values():
        stack: list[float] = []
        for s, end in sorted(spans, key=lambda x: (x[0], -x[1])):
            while stack and stack[-1] <= s + 1e-3:
                stack.pop()
            assert not stack or end <= stack[-1] + 1e-3, "overlapping slices on one track"
            stack.append(end)


def test_timeline_has_every_track_on_one_clock(mounted: Mounted, tmp_path: Path) -> None:
    model = mounted.mnt / "ext" / "ext.onnx"
    tdir = tmp_path / "t"
    res: LoadResult = run_load(model, state="cold", trace_dir=tdir)
    log = read_trace(tdir)
    doc = timeline(log)
    _check_timeline(
        doc,
        {
            "ORT phases",
            "read() ext.onnx",
            "mmap ext.onnx.data",
            "page-ins ext.onnx.data",
            "FUSE requests",
            "chunk fetches",
        },
    )
    t0 = doc["otherData"]["t0_ns"]  # type: ignore[index]
    events = doc["traceEvents"]
    assert isinstance(events, list)
    phases = {e["name"]: e for e in events if e.get("cat") == "phase"}
    init = res.runs[0].phase("session_initialization")
    assert init is not None
    assert phases["session_initialization"]["ts"] == pytest.approx((init.start_ns - t0) / 1000)
    # Aligned: every chunk of the .data file is fetched inside session_initialization (the
    # pre-packing reads the weights), the .onnx's one inside model_loading_uri.
    lo = phases["session_initialization"]["ts"]
    hi = lo + phases["session_initialization"]["dur"]
    data_fetches = [
        e for e in events if e.get("cat") == "fetch" and e["args"]["file"].endswith(".data")
    ]
    assert data_fetches and all(lo <= e["ts"] + e["dur"] <= hi for e in data_fetches)
