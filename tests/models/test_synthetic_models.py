from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from cvmfs_modelio.models.synthetic import make_model


def _run(path: Path, width: int) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((1, width), dtype=np.float32)
    out: np.ndarray = sess.run(None, {"x": x})[0]
    return out


def test_embedded_and_external_give_same_output(tmp_path: Path) -> None:
    a = make_model(tmp_path / "a.onnx", 3 * 4 * 64 * 64, width=64, seed=3)
    b = make_model(tmp_path / "b.onnx", 3 * 4 * 64 * 64, width=64, seed=3, external_data=True)
    assert a.layers == b.layers == 3
    assert a.data is None
    assert b.data is not None and b.data.stat().st_size >= 3 * 4 * 64 * 64
    assert a.onnx.stat().st_size > 3 * 4 * 64 * 64 > b.onnx.stat().st_size
    np.testing.assert_array_equal(_run(a.onnx, 64), _run(b.onnx, 64))
