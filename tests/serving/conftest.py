"""A small ONNX model with external data and its numpy reference, and the kserve check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.conftest import missing

IN, OUT = 64, 16


@dataclass(frozen=True)
class TinyModel:
    onnx: Path
    data: Path
    weight: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]

    def reference(self, x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """What the graph computes, in numpy: relu(x W + b)."""
        return np.maximum(x.astype(np.float64) @ self.weight + self.bias, 0).astype(np.float32)


def require_kserve() -> None:
    from cvmfs_modelio.serving.params import kserve_missing

    why = kserve_missing()
    if why is not None:
        missing(why)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """``y = Relu(x @ W + b)``, x [N, 64] float, W and b in ``tiny.onnx.data``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = tmp_path_factory.mktemp("kserve-model")
    rng = np.random.default_rng(7)
    w = rng.standard_normal((IN, OUT)).astype(np.float32)
    b = rng.standard_normal(OUT).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["a"]),
            helper.make_node("Relu", ["a"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = d / "tiny.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="tiny.onnx.data", size_threshold=0
    )
    return TinyModel(path, d / "tiny.onnx.data", w, b)
