"""ONNX Runtime under the tracer: external data is mmapped, embedded weights are read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from cvmfs_modelio.core.events import EventLog, Events, Op, Source
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.trace.export import chrome_trace
from cvmfs_modelio.trace.summary import file_totals
from cvmfs_modelio.trace.tracer import read_trace, traced_env

PAGE = 4096
SESSION = "import onnxruntime as o, sys\nfor m in sys.argv[1:]: o.InferenceSession(m)\n"


def trace_sessions(tmp: Path, models: list[Path], match: list[str]) -> EventLog:
    trace = tmp / "trace"
    trace.mkdir()
    r = subprocess.run(
        [sys.executable, "-c", SESSION, *map(str, models)],
        env=traced_env(trace, match),
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return read_trace(trace)


def events_of(log: EventLog, path: Path) -> tuple[int, Events]:
    fid = next(f for f, e in log.files.items() if e.path == str(path))
    ev: Events = log.events[log.events["file_id"] == fid]
    return fid, ev


def test_external_data_is_mmapped_per_initializer(tmp_path: Path) -> None:
    m = make_model(tmp_path / "ext.onnx", 12 * 1024 * 1024, external_data=True, width=512)
    assert m.data is not None
    log = trace_sessions(tmp_path, [m.onnx], [str(tmp_path)])
    _, ev = events_of(log, m.data)
    pre = ev[ev["source"] == Source.PRELOAD]
    # Where each initializer lives in the .data file, from the model itself.
    model = onnx.load(str(m.onnx), load_external_data=False)
    spans = []
    for t in model.graph.initializer:
        info = {e.key: int(e.value) for e in t.external_data if e.key in ("offset", "length")}
        spans.append((info["offset"], info["length"]))
    assert len(spans) == m.layers
    mmaps = pre[pre["op"] == Op.MMAP]
    assert len(mmaps) == len(spans)  # one mmap per initializer
    got = sorted((int(e["offset"]), int(e["length"])) for e in mmaps)
    want = sorted((o - o % PAGE, ln + o % PAGE) for o, ln in spans)
    assert got == want
    assert np.all(mmaps["aux"] & 0x3 == 0x2)  # MAP_PRIVATE
    reads = pre[np.isin(pre["op"], [Op.READ, Op.PREAD, Op.READV, Op.PREADV, Op.FREAD])]
    assert len(reads) == 0  # ORT never read()s external data
    assert len(pre[pre["op"] == Op.MUNMAP]) == len(spans)
    # With weight pre-packing every page of every initializer is touched during creation.
    faults = ev[(ev["source"] == Source.MINCORE) & (ev["op"] == Op.PAGE_FAULT)]
    touched = np.zeros(m.data.stat().st_size // PAGE + 1, dtype=bool)
    for e in faults:
        touched[int(e["offset"]) // PAGE : (int(e["offset"]) + int(e["length"])) // PAGE] = True
    for o, ln in spans:
        assert touched[o // PAGE : (o + ln + PAGE - 1) // PAGE].all()
    totals = {t.path: t for t in file_totals(log)}[str(m.data)]
    assert totals.bytes_read == 0
    assert totals.bytes_faulted == sum(ln + o % PAGE for o, ln in spans)
    # The Perfetto export shows the page-ins as instants and a counter up to the file size.
    doc = chrome_trace(log)
    json.dumps(doc)
    inst = [e for e in doc["traceEvents"] if e["ph"] == "i" and e["args"]["file"] == str(m.data)]
    assert len(inst) == len(faults) + int(np.sum(ev["op"] == Op.PAGE_IN))
    ctr = [e for e in doc["traceEvents"] if e["ph"] == "C" and "mapped bytes" in e["name"]]
    assert max(e["args"]["bytes"] for e in ctr) == totals.bytes_faulted


def test_embedded_weights_are_read_sequentially_in_4mib(tmp_path: Path) -> None:
    m = make_model(tmp_path / "emb.onnx", 18 * 1024 * 1024, width=512)
    size = m.onnx.stat().st_size
    log = trace_sessions(tmp_path, [m.onnx], [str(tmp_path)])
    _, ev = events_of(log, m.onnx)
    reads = ev[ev["op"] == Op.READ]
    assert np.all(reads["length"] == 4 << 20)
    assert int(reads["offset"][0]) == 0
    assert np.all(reads["offset"][1:] == reads["offset"][:-1] + reads["result"][:-1])
    assert int(reads["result"].sum()) == size
    assert int(reads["result"][-1]) == 0  # read to EOF
    assert len(ev[ev["op"] == Op.MMAP]) == 0


def test_cms_models_are_read_whole(tmp_path: Path, cms_models: list[Path]) -> None:
    log = trace_sessions(tmp_path, cms_models, [str(cms_models[0].parents[3])])
    totals = {t.path: t for t in file_totals(log)}
    for m in cms_models:
        t = totals[str(m.resolve())]
        assert t.bytes_read == m.stat().st_size, m
        assert t.bytes_mapped == 0
        assert t.calls["open"] == 1 and t.calls["close"] == 1


def test_no_prepacking_touches_nothing_at_creation(tmp_path: Path) -> None:
    m = make_model(tmp_path / "ext.onnx", 4 * 1024 * 1024, external_data=True, width=512)
    assert m.data is not None
    code = (
        "import onnxruntime as o, sys\n"
        "so = o.SessionOptions()\n"
        "so.add_session_config_entry('session.disable_prepacking', '1')\n"
        "s = o.InferenceSession(sys.argv[1], so)\n"
    )
    trace = tmp_path / "trace"
    trace.mkdir()
    r = subprocess.run(
        [sys.executable, "-c", code, str(m.onnx)],
        env=traced_env(trace, [str(tmp_path)]),
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    log = read_trace(trace)
    _, ev = events_of(log, m.data)
    assert len(ev[ev["op"] == Op.MMAP]) == m.layers
    faults = ev[(ev["source"] == Source.MINCORE) & (ev["op"] == Op.PAGE_FAULT)]
    assert len(faults) == 0  # mapped, never touched before the first run()
