"""Tensor boundaries of ONNX models and the tensor-aware layouts cut there."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest

from cvmfs_modelio.chunks.layouts import ChunkSpec, compute_layout, parse_chunk_spec
from cvmfs_modelio.cli import main
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.models.tensor_bounds import tensor_boundaries, tensor_ranges

KIB = 1024


def test_external_data_ranges_are_the_recorded_offsets(tmp_path: Path) -> None:
    m = make_model(tmp_path / "m.onnx", 6 * 4 * 128 * 128, external_data=True, width=128)
    assert m.data is not None
    model = onnx.load(str(m.onnx), load_external_data=False)
    expected = []
    for t in model.graph.initializer:
        info = {e.key: e.value for e in t.external_data}
        expected.append((int(info.get("offset", "0")), int(info["length"])))
    assert tensor_ranges(m.data) == sorted(expected)
    assert len(expected) == 6 and all(n == 4 * 128 * 128 for _, n in expected)
    bounds = tensor_boundaries(m.data)
    spec = ChunkSpec(kind="tensor-aware", min_size=40 * KIB, avg_size=64 * KIB, max_size=200 * KIB)
    lay = compute_layout(m.data, spec)
    assert lay.source == "layout-aware" and lay.chunked
    # Every cut is a tensor boundary (64 KiB tensors: no hard cuts needed).
    assert set(lay.offsets.tolist()[1:]) <= set(bounds)


def test_embedded_ranges_hold_the_tensor_bytes(tmp_path: Path) -> None:
    m = make_model(tmp_path / "e.onnx", 4 * 4 * 96 * 96, width=96, seed=3)
    data = m.onnx.read_bytes()
    model = onnx.load(str(m.onnx))
    ranges = tensor_ranges(m.onnx)
    assert len(ranges) == 4
    raws = {bytes(t.raw_data) for t in model.graph.initializer}
    for off, n in ranges:
        assert data[off : off + n] in raws
    assert [n for _, n in ranges] == [4 * 96 * 96] * 4


def test_real_cms_model_boundaries(cms_models: list[Path]) -> None:
    big = max(cms_models, key=lambda p: p.stat().st_size)
    data = big.read_bytes()
    ranges = tensor_ranges(big)
    assert len(ranges) > 10
    for (a, n), (b, _) in itertools.pairwise(ranges):
        assert a + n <= b  # disjoint, sorted
    model = onnx.load(str(big))
    placed = {data[a : a + n] for a, n in ranges}
    assert placed <= {bytes(t.raw_data) for t in model.graph.initializer}
    lay = compute_layout(big, parse_chunk_spec("tensor-aware:64KiB/256KiB/1MiB"))
    assert lay.chunked
    cuts = set(lay.offsets.tolist()[1:])
    bounds = set(tensor_boundaries(big))
    hard = {int(o) for o, s in zip(lay.offsets[1:], lay.sizes[:-1], strict=True) if s == 1 << 20}
    assert cuts <= bounds | hard


def test_tensor_aware_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "x.onnx"
    junk.write_bytes(np.random.Generator(np.random.PCG64(1)).bytes(5000))
    with pytest.raises(UsageError, match="not a readable ONNX model"):
        tensor_ranges(junk)
    lone = tmp_path / "lone.data"
    lone.write_bytes(b"\0" * 100)
    junk.unlink()
    with pytest.raises(UsageError, match="no ONNX model beside it"):
        tensor_ranges(lone)
    assert main(["chunks", str(lone), "--tensor-aware", "64KiB/32KiB/1MiB"]) == 2
    assert "min < avg < max" in capsys.readouterr().err
