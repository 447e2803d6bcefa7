"""A recorded ONNX Runtime load (LD_PRELOAD tracer) analysed against chunk layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cvmfs_modelio import _native
from cvmfs_modelio.chunks.analysis import analyze, requests_from_events
from cvmfs_modelio.chunks.layouts import ChunkSpec, compute_layout
from cvmfs_modelio.cli import main
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.trace.tracer import read_trace, traced_env

SESSION = "import onnxruntime as o, sys\no.InferenceSession(sys.argv[1])\n"


def record(tmp: Path, model: Path) -> Path:
    trace = tmp / "trace"
    trace.mkdir()
    r = subprocess.run(
        [sys.executable, "-c", SESSION, str(model)],
        env=traced_env(trace, [str(tmp)]),
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return trace


def test_ort_external_data_load_touches_every_chunk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = make_model(tmp_path / "ext.onnx", 8 << 20, external_data=True, width=512, seed=2)
    assert m.data is not None
    trace = record(tmp_path, m.onnx)
    log = read_trace(trace)
    fid = next(f for f, e in log.files.items() if e.path == str(m.data))
    size = m.data.stat().st_size
    spec = ChunkSpec(min_size=128 << 10, avg_size=256 << 10, max_size=1 << 20)
    layout = compute_layout(m.data, spec)
    a = analyze(requests_from_events(log.events, size, fid), layout)
    # Weight pre-packing touches every initializer while the session is created.
    assert a.n_fetches == layout.n_chunks > 1
    assert a.fetched_bytes == size
    assert sorted(a.chunks_touched.tolist()) == list(range(layout.n_chunks))
    assert (a.first_touch_ns[1:] >= a.first_touch_ns[:-1]).all()
    # The same through the CLI sweep, with the .onnx (read whole) in the corpus too.
    rc = main(["sweep", str(trace), "--avg", "256KiB,1MiB", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "whole-file load assumed" not in out
    doc = json.loads((tmp_path / "s.json").read_text())
    onnx_size = m.onnx.stat().st_size
    assert {f["path"] for f in doc["files"]} == {str(m.onnx), str(m.data)}
    for row in doc["rows"]:
        assert row["fetched_bytes"] == size + onnx_size
        assert row["amplification"] == 1.0
        n = len(
            _native.xor32_offsets(
                m.data.read_bytes(), row["min_bytes"], row["avg_bytes"], row["max_bytes"]
            )
        )
        assert row["n_chunks"] == n + 1
