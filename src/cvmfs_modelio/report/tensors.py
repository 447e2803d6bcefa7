"""Where a model's tensors lie: the ``inspect_model`` interface the report labels heat maps with.

``cvmfs_modelio.models.inspect.inspect_model(path) -> ModelMap`` (``.tensors``: ``TensorSpan``
with name, dtype, shape, file, offset_bytes, length_bytes) is being built in another branch;
until it lands this adapter gives the same interface from ONNX protobufs (the way
``models.tensor_bounds`` finds tensors), and uses the real one as soon as it exists.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TensorSpan:
    """One weight tensor: where its bytes are (``file`` relative to the model directory)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    offset_bytes: int
    length_bytes: int


@dataclass(frozen=True)
class ModelMap:
    """The tensors of a model, in file and offset order."""

    path: str
    tensors: tuple[TensorSpan, ...]


def inspect_model(path: str | os.PathLike[str]) -> Any:
    """The model's tensor map (the real ``models.inspect`` when installed, else this adapter)."""
    try:
        from cvmfs_modelio.models import inspect as real  # type: ignore[attr-defined]

        return real.inspect_model(path)
    except ImportError:
        return _onnx_map(Path(path))


def _onnx_map(p: Path) -> ModelMap:
    if p.suffix != ".onnx":
        return ModelMap(str(p), ())
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception:  # not ONNX after all: no labels rather than no report
        return ModelMap(str(p), ())
    spans: list[TensorSpan] = []
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = 0
        for t in model.graph.initializer:
            dtype = helper.tensor_dtype_to_np_dtype(t.data_type).name
            shape = tuple(int(d) for d in t.dims)
            info = {e.key: e.value for e in t.external_data}
            if "location" in info:
                spans.append(
                    TensorSpan(
                        t.name,
                        dtype,
                        shape,
                        info["location"],
                        int(info.get("offset", "0")),
                        int(info.get("length", "0")),
                    )
                )
                continue
            raw = bytes(t.raw_data)
            if len(raw) < 64:
                continue
            at = m.find(raw, pos)
            if at < 0:
                continue
            spans.append(TensorSpan(t.name, dtype, shape, p.name, at, len(raw)))
            pos = at + len(raw)
    spans.sort(key=lambda s: (s.file, s.offset_bytes))
    return ModelMap(str(p), tuple(spans))
