"""ONNX Runtime reads the model itself (the default loader).

With ``mmap`` False and external data, the external data files are read here with plain
``read()`` calls (one per file) and handed to ONNX Runtime as external initializers, so
ONNX Runtime never maps them; for ``.ort`` files ``mmap`` is ONNX Runtime's own
``session.use_memory_mapped_ort_model`` switch.
"""

from __future__ import annotations

import os
from typing import Any

from cvmfs_modelio.ort.loaders import Weights


def external_tensors(model: str) -> list[tuple[str, str, int, int, list[int], int]]:
    """(name, data file, offset, length, dims, ONNX data type) of every external initializer."""
    import onnx

    m = onnx.load(model, load_external_data=False)
    out = []
    base = os.path.dirname(os.path.abspath(model))
    for t in m.graph.initializer:
        info = {e.key: e.value for e in t.external_data}
        if "location" not in info:
            continue
        path = os.path.join(base, info["location"])
        off = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else os.stat(path).st_size - off
        out.append((t.name, path, off, length, [int(d) for d in t.dims], int(t.data_type)))
    return out


def load_weights(spec: dict[str, Any]) -> Weights:
    model = spec["model"]
    if spec.get("mmap") is not False or not model.endswith(".onnx"):
        return Weights(info={"how": "onnxruntime opens the model"})
    import numpy as np
    from onnx import helper

    ext = external_tensors(model)
    if not ext:
        return Weights(info={"how": "onnxruntime opens the model (no external data)"})
    blobs: dict[str, bytes] = {}
    for path in sorted({e[1] for e in ext}):
        with open(path, "rb", buffering=0) as f:
            blobs[path] = f.read()
    tensors = {}
    for name, path, off, length, dims, dtype in ext:
        np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
        count = length // np.dtype(np_dtype).itemsize
        arr = np.frombuffer(blobs[path], dtype=np_dtype, count=count, offset=off)
        tensors[name] = arr.reshape(dims)
    return Weights(
        tensors,
        {"how": "external data read() whole by the runner, given as external initializers"},
    )
