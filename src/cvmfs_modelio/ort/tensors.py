"""Where a model's tensors lie in its files: the map from a byte offset back to a tensor.

A small stand-in with exactly the interface of ``cvmfs_modelio.models.inspect`` (being built
for issue 9, items 1-2): :func:`inspect_model` returns a :class:`ModelMap` whose ``tensors``
are :class:`TensorSpan` records and whose :meth:`ModelMap.tensors_in` answers "which tensors
does this byte range touch".  When ``models.inspect`` lands, :mod:`cvmfs_modelio.ort.load`
switches with one import line.

Covered here: ONNX with embedded weights (the initializers' ``raw_data`` located in the file
in order, as :mod:`cvmfs_modelio.models.tensor_bounds` does), ONNX with external data (offsets
and lengths from the model), and safetensors (the header's ``data_offsets``).  Other files
give an empty map.  Paths are canonical (``realpath``), as the tracer records them.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.paths import resolve_inside

# ONNX TensorProto.DataType to numpy-style names.
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
MIN_EMBEDDED_BYTES = 64  # smaller raw_data cannot be placed reliably by search, nor matters


@dataclass(frozen=True)
class TensorSpan:
    """One tensor's bytes in a file: ``offset_bytes`` and ``length_bytes`` in ``file``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    offset_bytes: int
    length_bytes: int

    @property
    def end_bytes(self) -> int:
        return self.offset_bytes + self.length_bytes


@dataclass(frozen=True)
class ModelMap:
    """Every tensor of a model with where it lies; :meth:`tensors_in` inverts the map."""

    tensors: tuple[TensorSpan, ...]
    _by_file: dict[str, tuple[list[int], list[TensorSpan]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        groups: dict[str, list[TensorSpan]] = {}
        for t in self.tensors:
            groups.setdefault(t.file, []).append(t)
        for f, spans in groups.items():
            spans.sort(key=lambda s: s.offset_bytes)
            self._by_file[f] = ([s.offset_bytes for s in spans], spans)

    def files(self) -> list[str]:
        """Files that hold tensors."""
        return sorted(self._by_file)

    def tensors_in(self, file: str, offset: int, length: int) -> list[TensorSpan]:
        """Tensors of ``file`` overlapping bytes ``[offset, offset + length)``, in file order."""
        entry = self._by_file.get(file)
        if entry is None or length <= 0:
            return []
        starts, spans = entry
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        out = []
        end = offset + length
        while i < len(spans) and spans[i].offset_bytes < end:
            s = spans[i]
            if s.end_bytes > offset:
                out.append(s)
            i += 1
        return out


def inspect_model(path: str | os.PathLike[str]) -> ModelMap:
    """The tensor map of a model file (``.onnx`` embedded or external data, ``.safetensors``)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such model file")
    if p.suffix == ".safetensors":
        return ModelMap(tuple(_safetensors_spans(p)))
    if p.suffix == ".onnx":
        return ModelMap(tuple(_onnx_spans(p)))
    return ModelMap(())


def _safetensors_spans(p: Path) -> list[TensorSpan]:
    real = os.path.realpath(p)
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise UsageError(f"{p}: not a safetensors file (shorter than its 8-byte header)")
        (n,) = struct.unpack("<Q", head)
        size = os.fstat(f.fileno()).st_size
        if n > size - 8 or n > 100 << 20:
            raise UsageError(f"{p}: not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError):
            raise UsageError(f"{p}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise UsageError(f"{p}: not a safetensors file (header is not an object)")
    base = 8 + n
    out = []
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        try:
            lo, hi = (int(x) for x in info["data_offsets"])
            shape = tuple(int(d) for d in info["shape"])
            dtype = _ST_DTYPES.get(str(info["dtype"]), str(info["dtype"]).lower())
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{p}: tensor {name!r} has a bad header entry") from None
        out.append(TensorSpan(name, dtype, shape, real, base + lo, hi - lo))
    return out


def _onnx_spans(p: Path) -> list[TensorSpan]:
    import onnx

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, ... on foreign bytes
        raise UsageError(f"{p}: not a readable ONNX model ({type(e).__name__})") from None
    real = os.path.realpath(p)
    out: list[TensorSpan] = []
    embedded = []
    for t in model.graph.initializer:
        dtype = _ONNX_DTYPES.get(int(t.data_type), f"onnx:{t.data_type}")
        shape = tuple(int(d) for d in t.dims)
        info = {e.key: e.value for e in t.external_data}
        if info.get("location"):
            where = f"{p}: tensor {t.name!r}"
            data = str(resolve_inside(p.parent, info["location"], what=where))
            try:
                off = int(info.get("offset", "0"))
                length = int(info["length"]) if "length" in info else -1
            except ValueError:
                raise UsageError(f"{p}: tensor {t.name!r} has a bad offset") from None
            if length < 0:
                with contextlib.suppress(OSError):
                    length = os.stat(data).st_size - off
            if length >= 0:
                out.append(TensorSpan(t.name, dtype, shape, data, off, length))
        elif len(t.raw_data) >= MIN_EMBEDDED_BYTES:
            embedded.append((t.name, dtype, shape, bytes(t.raw_data)))
    if embedded:
        # read(), not mmap: on a FUSE mount a page fault would hold the GIL while the client
        # (perhaps served from this very process) fetches the chunk.
        with open(p, "rb") as f:
            m = f.read()
            pos = 0
            for name, dtype, shape, raw in embedded:
                at = m.find(raw, pos)
                if at < 0:
                    at = m.find(raw)
                if at < 0:
                    continue
                out.append(TensorSpan(name, dtype, shape, real, at, len(raw)))
                pos = at + len(raw)
    return out
