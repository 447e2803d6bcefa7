"""Synthetic ONNX models of a chosen size, with weights embedded or as external data.

The graph is a chain ``y = relu(... relu(x @ W0) ... @ Wn)`` of square float32 MatMuls, so
ONNX Runtime really uses every weight at the first inference.  Weights are random (seeded)
so that chunk-level deduplication and compression behave as for trained weights, not as
for constant data.  The bytes written for given arguments never change (recorded test
vectors were made with them); :mod:`cvmfs_modelio.models.corpus` has the larger kinds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.writers import FILE_MODE


@dataclass(frozen=True)
class SyntheticModel:
    """Paths of a generated model; ``data`` is None when the weights are embedded."""

    onnx: Path
    data: Path | None
    width: int
    layers: int
    weight_bytes: int


def make_model(
    path: str | Path,
    weight_bytes: int = 50 * 1024 * 1024,
    *,
    external_data: bool = False,
    width: int = 1024,
    seed: int = 0,
) -> SyntheticModel:
    """Write a model whose weights total about ``weight_bytes`` (rounded to whole layers).

    With ``external_data`` the weights go to ``<name>.data`` next to the ``.onnx`` file, as
    ``onnx.save_model(..., save_as_external_data=True)`` lays them out (each tensor aligned as
    ONNX does).  Returns the paths written.
    """
    if width < 1 or weight_bytes < 4 * width * width:
        raise UsageError(f"{path}: weight_bytes must hold at least one {width}x{width} layer")
    dest = Path(path)
    layers = max(1, math.floor(weight_bytes / (4 * width * width)))
    rng = np.random.Generator(np.random.PCG64(seed))
    scale = np.float32(1.0 / math.sqrt(width))
    inits = []
    nodes = []
    prev = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name=f"w{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        mm = f"m{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [mm], name=f"matmul{i}"))
        nodes.append(helper.make_node("Relu", [mm], [out], name=f"relu{i}"))
        prev = out
    graph = helper.make_graph(
        nodes,
        "synthetic_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    dest.parent.mkdir(parents=True, exist_ok=True)
    data_path: Path | None = None
    if external_data:
        data_path = dest.with_name(dest.name + ".data")
        data_path.unlink(missing_ok=True)
        onnx.save_model(
            model,
            str(dest),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_path.name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(dest))
    # onnx creates external data files 0600; a published model must be readable by all.
    for p in (dest, data_path):
        if p is not None:
            os.chmod(p, FILE_MODE)
    return SyntheticModel(dest, data_path, width, layers, layers * 4 * width * width)
