"""How each loader reads a model, asserted exactly from traces of real loads (issue 9, item 5).

ONNX Runtime: an embedded ``.onnx`` is read with sequential 4 MiB read()s inside
model_loading_uri; external data is mapped once per initializer and never read(); default
weight pre-packing touches every weight page during session_initialization, and
``disable_prepacking`` moves the first touch into the first run; an ``.ort`` file is read whole
in one call.  safetensors lazy touches only the tensors asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from cvmfs_modelio.core.events import EventLog, Events, Op, Source
from cvmfs_modelio.models.inspect import inspect_model
from cvmfs_modelio.ort.load import LoadResult, run_load
from cvmfs_modelio.trace.tracer import READ_OPS, read_trace
from tests.ort.conftest import ROOT_ONLY, Models

PAGE = 4096
FOUR_MIB = 4 << 20


def load(model: Path, tmp: Path, **kw: object) -> tuple[LoadResult, EventLog]:
    tdir = tmp / f"trace-{len(list(tmp.glob('trace-*')))}"
    res = run_load(model, trace_dir=tdir, **kw)  # type: ignore[arg-type]
    return res, read_trace(tdir)


def file_events(log: EventLog, path: Path) -> Events:
    real = os.path.realpath(path)
    fids = [f for f, e in log.files.items() if e.path == real]
    assert fids, f"{real} not in the trace"
    ev: Events = log.events[np.isin(log.events["file_id"], fids)]
    return ev


def phase(res: LoadResult, name: str) -> tuple[int, int]:
    p = res.runs[0].phase(name)
    assert p is not None, [q.name for q in res.runs[0].phases]
    return p.start_ns, p.end_ns


def test_embedded_onnx_is_read_in_sequential_4mib_reads_inside_model_loading(
    models: Models, tmp_path: Path
) -> None:
    res, log = load(models.embedded, tmp_path, state="warm")
    ev = file_events(log, models.embedded)
    pre = ev[ev["source"] == Source.PRELOAD]
    reads = pre[np.isin(pre["op"], [int(o) for o in READ_OPS])]
    size = models.embedded.stat().st_size
    n_full = size // FOUR_MIB
    # read(4 MiB) at 0, 4 MiB, 8 MiB, ...; the last one returns the tail, then 0 (EOF).
    assert reads["op"].tolist() == [int(Op.READ)] * len(reads)
    assert reads["length"].tolist() == [FOUR_MIB] * len(reads)
    assert reads["offset"].tolist() == [k * FOUR_MIB for k in range(n_full + 1)] + [size]
    assert reads["result"].tolist() == [FOUR_MIB] * n_full + [size - n_full * FOUR_MIB, 0]
    assert not (pre["op"] == Op.MMAP).any()
    lo, hi = phase(res, "model_loading_uri")
    assert (reads["t_start_ns"] >= lo).all()
    assert (reads["t_start_ns"] + reads["duration_ns"] <= hi).all()
    # ... and the phase table says the same.
    rec = res.runs[0].phase("model_loading_uri")
    assert rec is not None and rec.read_bytes == size and rec.read_calls == len(reads)
    init = res.runs[0].phase("session_initialization")
    assert init is not None and init.read_bytes == 0


def test_external_data_is_mapped_once_per_initializer_never_read(
    models: Models, tmp_path: Path
) -> None:
    res, log = load(models.external, tmp_path, state="warm")
    ev = file_events(log, models.data)
    pre = ev[ev["source"] == Source.PRELOAD]
    assert not np.isin(pre["op"], [int(o) for o in READ_OPS]).any()
    model = onnx.load(str(models.external), load_external_data=False)
    spans = []
    for t in model.graph.initializer:
        info = {e.key: int(e.value) for e in t.external_data if e.key in ("offset", "length")}
        spans.append((info["offset"], info["length"]))
    mmaps = pre[pre["op"] == Op.MMAP]
    assert sorted((int(e["offset"]), int(e["length"])) for e in mmaps) == sorted(
        (o - o % PAGE, ln + o % PAGE) for o, ln in spans
    )
    # ONNX Runtime maps them while it saves the initializers (its log's sub-phase).
    lo, hi = phase(res, "save_initializers")
    assert ((mmaps["t_start_ns"] >= lo) & (mmaps["t_start_ns"] < hi)).all()


def _weights_pages(models: Models) -> set[str]:
    return {t.name for t in inspect_model(models.external).tensors}


@ROOT_ONLY
def test_prepacking_touches_every_weight_during_session_initialization(
    models: Models, tmp_path: Path
) -> None:
    res, _ = load(models.external, tmp_path, state="cold")
    run = res.runs[0]
    first = {t["name"]: t for t in run.tensor_first_touch}
    assert set(first) == _weights_pages(models)
    lo, hi = phase(res, "session_initialization")
    assert all(lo <= t["first_touch_ns"] < hi for t in first.values())
    assert {t["phase"] for t in first.values()} == {"prepack_and_finalize"}
    init = run.phase("session_initialization")
    first_run = run.phase("first_run")
    assert init is not None and first_run is not None
    weights = sum(s.length_bytes for s in inspect_model(models.external).tensors)
    assert init.mmap_touched_bytes >= weights  # every page of every weight (page-rounded)
    assert init.paged_in_bytes >= weights  # cold: it all came from disk, then
    assert first_run.mmap_touched_bytes == 0 and first_run.paged_in_bytes == 0


@ROOT_ONLY
def test_disable_prepacking_moves_the_first_touch_into_the_first_run(
    models: Models, tmp_path: Path
) -> None:
    res, _ = load(models.external, tmp_path, state="cold", disable_prepacking=True)
    run = res.runs[0]
    first = {t["name"]: t for t in run.tensor_first_touch}
    assert set(first) == _weights_pages(models)
    lo, hi = phase(res, "first_run")
    assert all(lo <= t["first_touch_ns"] < hi for t in first.values())
    init = run.phase("session_initialization")
    assert init is not None and init.mmap_touched_bytes == 0 and init.tensors_touched == 0
    first_run = run.phase("first_run")
    weights = sum(s.length_bytes for s in inspect_model(models.external).tensors)
    assert first_run is not None and first_run.mmap_touched_bytes >= weights


def test_ort_format_is_read_whole_in_one_call(ort_model: Path, tmp_path: Path) -> None:
    res, log = load(ort_model, tmp_path, state="warm")
    ev = file_events(log, ort_model)
    pre = ev[ev["source"] == Source.PRELOAD]
    reads = pre[np.isin(pre["op"], [int(o) for o in READ_OPS]) & (pre["result"] > 0)]
    size = ort_model.stat().st_size
    assert reads["result"].tolist() == [size]
    assert reads["offset"].tolist() == [0]
    assert not (pre["op"] == Op.MMAP).any()
    # ONNX Runtime profiles no loading phase for .ort: it precedes session_initialization.
    lo, hi = phase(res, "model_loading")
    assert lo <= int(reads["t_start_ns"][0]) < hi
    assert res.runs[0].phase("model_loading_uri") is None


def test_ort_format_use_mmap_maps_it_once(ort_model: Path, tmp_path: Path) -> None:
    _res, log = load(ort_model, tmp_path, state="warm", mmap=True)
    pre = file_events(log, ort_model)
    pre = pre[pre["source"] == Source.PRELOAD]
    assert not (np.isin(pre["op"], [int(o) for o in READ_OPS]) & (pre["result"] > 0)).any()
    mm = pre[pre["op"] == Op.MMAP]
    assert [(int(e["offset"]), int(e["length"])) for e in mm] == [(0, ort_model.stat().st_size)]


def test_no_mmap_reads_external_data_and_ort_never_maps_it(models: Models, tmp_path: Path) -> None:
    res, log = load(models.external, tmp_path, state="warm", mmap=False)
    pre = file_events(log, models.data)
    pre = pre[pre["source"] == Source.PRELOAD]
    assert not (pre["op"] == Op.MMAP).any()
    reads = pre[np.isin(pre["op"], [int(o) for o in READ_OPS]) & (pre["result"] > 0)]
    assert int(reads["result"].sum()) == models.data.stat().st_size
    lo, hi = phase(res, "weights_load")
    assert ((reads["t_start_ns"] >= lo) & (reads["t_start_ns"] < hi)).all()


def test_safetensors_lazy_touches_only_the_tensors_asked_for(tmp_path: Path) -> None:
    """Exact up to the kernel's mapping granularity: a fault maps its 64 KiB fault-around
    window, and a large folio is mapped whole (up to 2 MiB, aligned); so the tensors next to
    an asked one may show up to the next 2 MiB boundary + 64 KiB, the others nothing."""
    from cvmfs_modelio.models.synthetic import make_model
    from cvmfs_modelio.ort.weights import onnx_to_safetensors

    m = make_model(tmp_path / "m" / "big.onnx", 48 << 20, width=1024, external_data=True)
    st = onnx_to_safetensors(m.onnx, tmp_path / "m" / "big.safetensors")
    spans = sorted(inspect_model(st).tensors, key=lambda s: s.offset_bytes)
    assert len(spans) == 12 and all(s.length_bytes == 4 << 20 for s in spans)
    asked = [spans[4], spans[8]]
    res, log = load(
        st, tmp_path, state="cold", loader="safetensors-lazy", tensors=[s.name for s in asked]
    )
    run = res.runs[0]
    ev = file_events(log, st)
    touched = np.zeros((st.stat().st_size + PAGE - 1) // PAGE, dtype=bool)
    faults = ev[(ev["source"] == Source.MINCORE) & (ev["op"] == Op.PAGE_FAULT)]
    for e in faults:
        touched[int(e["offset"]) // PAGE : (int(e["offset"]) + int(e["length"])) // PAGE] = True

    def pages(s: object) -> slice:
        assert hasattr(s, "offset_bytes")
        return slice(s.offset_bytes // PAGE, (s.end_bytes + PAGE - 1) // PAGE)  # type: ignore[attr-defined]

    for s in asked:
        assert touched[pages(s)].all(), s.name
    spill = (2 << 20) + (64 << 10)
    neighbours = {i for a in (4, 8) for i in (a - 1, a + 1)} | {0}  # w0: the header's page
    for i, s in enumerate(spans):
        if i in (4, 8):
            continue
        n = int(touched[pages(s)].sum()) * PAGE
        if i in neighbours:
            assert n <= spill, (s.name, n)
        else:
            assert n == 0, (s.name, n)
    first = {t["name"] for t in run.tensor_first_touch}
    assert {s.name for s in asked} <= first
    assert first <= {spans[i].name for i in neighbours | {4, 8}}
    weights = run.phase("weights_load")
    assert weights is not None
    assert {t["name"] for t in weights.top_tensors[:2]} == {s.name for s in asked}
    assert res.runs[0].phase("session") is None  # only some tensors: nothing to run
