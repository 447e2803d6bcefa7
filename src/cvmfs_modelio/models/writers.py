"""Streaming writers for generated models: ONNX (embedded or external data) and safetensors.

Weights arrive as :class:`Weight` objects whose ``blocks()`` yield the tensor's values in
order, so a model of any size is written without holding its weights in memory.

The embedded ONNX writer emits exactly the bytes ``onnx.save_model`` would (protobuf writes
fields in field-number order, and a message is the concatenation of its fields): the parts
of the ModelProto and GraphProto before and after the initializers are serialized by onnx,
and each initializer is framed by hand around its streamed ``raw_data``.  Every file is
written under a temporary name, renamed into place when complete, and left mode 0644.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cvmfs_modelio.core.errors import UsageError

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1024  # onnx.save_model's default size_threshold
FILE_MODE = 0o644
ONNX_FLOAT = 1
_ST_DTYPES = {"float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32"}


@dataclass(frozen=True)
class Weight:
    """One tensor to write: name, shape, dtype and a producer of its values in order."""

    name: str
    shape: tuple[int, ...]
    blocks: Callable[[], Iterator[np.ndarray]]
    dtype: str = "float32"
    constant: bool = False  # a graph constant (shape, axes, scale), not a model parameter

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def constant(name: str, arr: np.ndarray) -> Weight:
    """A small graph constant (kept in ONNX forms, left out of safetensors)."""
    a = np.array(arr, order="C")  # not ascontiguousarray: it makes scalars 1-D
    return Weight(name, tuple(a.shape), fixed(a), str(a.dtype), constant=True)


def fixed(arr: np.ndarray) -> Callable[[], Iterator[np.ndarray]]:
    """A ``Weight.blocks`` producing the array ``arr`` as one block."""

    def blocks() -> Iterator[np.ndarray]:
        yield arr

    return blocks


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number: int, payload_len: int) -> bytes:
    return _varint(number << 3 | 2) + _varint(payload_len)


def _write_blocks(f: BinaryIO, w: Weight) -> None:
    n = 0
    for block in w.blocks():
        arr = np.ascontiguousarray(block, dtype=w.dtype)
        f.write(arr.data)
        n += arr.nbytes
    if n != w.nbytes:
        raise AssertionError(f"weight {w.name}: produced {n} bytes, expected {w.nbytes}")


@contextlib.contextmanager
def staged(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Temporary siblings of ``paths``; renamed onto them (mode 0644) only if the body succeeds."""
    tmps = [p.with_name(f".{p.name}.part{os.getpid()}") for p in paths]
    try:
        yield tmps
        for t, p in zip(tmps, paths, strict=True):
            os.chmod(t, FILE_MODE)
            os.replace(t, p)
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)


def _onnx_dtype(dtype: str) -> int:
    from onnx import helper

    return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def _fields_of(cls: Any, msg: Any, keep: Callable[[int], bool]) -> Any:
    """A copy of ``msg`` with only the fields whose number ``keep`` accepts."""
    out = cls()
    out.CopyFrom(msg)
    for fd in cls.DESCRIPTOR.fields:
        if not keep(fd.number):
            out.ClearField(fd.name)
    return out


def write_onnx_embedded(path: Path, model: Any, weights: Sequence[Weight]) -> None:
    """``model`` (a ModelProto without initializers) plus ``weights`` as embedded raw_data."""
    import onnx

    total = sum(w.nbytes for w in weights)
    if total >= PROTOBUF_LIMIT:
        raise UsageError(
            f"{path}: {total} bytes of weights cannot be embedded (protobuf limit 2 GiB); "
            "use an external-data form"
        )
    if len(model.graph.initializer) or len(model.graph.sparse_initializer):
        raise AssertionError("write_onnx_embedded: the model must come without initializers")
    # Split the graph around its initializers (field 5) by field number, keeping each
    # field's presence exactly as in ``model`` (proto2: an explicitly empty string counts).
    g_head = _fields_of(onnx.GraphProto, model.graph, lambda n: n < 5).SerializeToString()
    g_tail = _fields_of(onnx.GraphProto, model.graph, lambda n: n > 5).SerializeToString()
    inits = []
    for w in weights:
        t = onnx.TensorProto(dims=w.shape, data_type=_onnx_dtype(w.dtype), name=w.name)
        head = t.SerializeToString() + _len_field(9, w.nbytes)
        inits.append((_len_field(5, len(head) + w.nbytes), head, w))
    graph_len = len(g_head) + len(g_tail) + sum(len(a) + len(b) + w.nbytes for a, b, w in inits)
    m_head = _fields_of(onnx.ModelProto, model, lambda n: n < 7)
    m_tail = _fields_of(onnx.ModelProto, model, lambda n: n > 7)
    total_len = len(m_head.SerializeToString()) + graph_len
    if total_len + 16 >= PROTOBUF_LIMIT:
        raise UsageError(f"{path}: the model would exceed the 2 GiB protobuf limit")
    with staged([path]) as (tmp,), open(tmp, "wb") as f:
        f.write(m_head.SerializeToString())
        f.write(_len_field(7, graph_len))
        f.write(g_head)
        for frame, head, w in inits:
            f.write(frame)
            f.write(head)
            _write_blocks(f, w)
        f.write(g_tail)
        f.write(m_tail.SerializeToString())


def write_onnx_external(
    path: Path,
    model: Any,
    weights: Sequence[Weight],
    *,
    align: int = 0,
    size_threshold: int = EXTERNAL_THRESHOLD,
) -> Path:
    """``model`` with ``weights`` in one external file ``<name>.data`` beside it.

    ``align``: each tensor starts at a multiple of this many bytes (zero padding between
    tensors); 0 packs them back to back.  Tensors under ``size_threshold`` bytes stay
    embedded, as ``onnx.save_model`` does (ONNX Runtime needs shape-like constants such as
    Unsqueeze axes in the graph for shape inference).  Returns the data file's path.
    """
    import onnx

    data_path = path.with_name(path.name + ".data")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    offset = 0
    layout = []
    for w in weights:
        t = onnx.TensorProto(dims=w.shape, data_type=_onnx_dtype(w.dtype), name=w.name)
        if w.nbytes < size_threshold:
            t.raw_data = b"".join(
                np.ascontiguousarray(b, dtype=w.dtype).tobytes() for b in w.blocks()
            )
            m.graph.initializer.append(t)
            continue
        if align and offset % align:
            offset += align - offset % align
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", data_path.name), ("offset", offset), ("length", w.nbytes)):
            e = t.external_data.add()
            e.key, e.value = k, str(v)
        m.graph.initializer.append(t)
        layout.append((offset, w))
        offset += w.nbytes
    with staged([path, data_path]) as (tmp_onnx, tmp_data):
        with open(tmp_data, "wb") as f:
            for off, w in layout:
                if f.tell() < off:
                    f.write(bytes(off - f.tell()))
                _write_blocks(f, w)
        with open(tmp_onnx, "wb") as f:
            f.write(m.SerializeToString())
    return data_path


def write_safetensors(
    path: Path, weights: Sequence[Weight], metadata: dict[str, str] | None = None
) -> None:
    """``weights`` as safetensors, in the given order, header padded to 8 bytes as upstream.

    Graph constants (``Weight.constant``) are not parameters and are left out, as a
    framework's ``save_file(model.state_dict())`` would."""
    weights = [w for w in weights if not w.constant]
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for w in weights:
        if w.dtype not in _ST_DTYPES:
            raise AssertionError(f"no safetensors dtype for {w.dtype}")
        header[w.name] = {
            "dtype": _ST_DTYPES[w.dtype],
            "shape": list(w.shape),
            "data_offsets": [offset, offset + w.nbytes],
        }
        offset += w.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with staged([path]) as (tmp,), open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for w in weights:
            _write_blocks(f, w)


def convert_to_ort(onnx_path: Path, ort_path: Path) -> None:
    """Have ONNX Runtime save ``onnx_path`` in its ``.ort`` flatbuffer format (no graph
    optimization, so the initializers are the same tensors)."""
    import onnxruntime as ort

    with staged([ort_path]) as (tmp,):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.optimized_model_filepath = str(tmp)
        so.add_session_config_entry("session.save_model_format", "ORT")
        try:
            ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types (Fail, RuntimeException...)
            text = str(e).strip()
            msg = text.splitlines()[0] if text else type(e).__name__
            raise UsageError(
                f"{ort_path}: ONNX Runtime cannot save this model as .ort: {msg}"
            ) from None
        if not tmp.exists():
            raise UsageError(f"{ort_path}: ONNX Runtime wrote no .ort file")
