"""Where an ONNX model's weight tensors lie in its files: preferred cuts for layout-aware chunking.

For an ``.onnx`` file with embedded weights the tensors' ``raw_data`` are located in the file
(the protobuf stores them in initializer order, so one forward search each); for an external
data file (``model.onnx.data``) the ``.onnx`` files beside it give each tensor's ``offset`` and
``length``.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError


def _load(onnx_path: Path) -> object:
    import onnx

    try:
        return onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, ... on foreign bytes
        raise UsageError(f"{onnx_path}: not a readable ONNX model ({type(e).__name__})") from None


def tensor_ranges(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """``(offset, length)`` in bytes of every weight tensor stored in ``path``, sorted."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such file or directory")
    if p.suffix == ".onnx":
        return _embedded_ranges(p)
    return _external_ranges(p)


def tensor_boundaries(path: str | os.PathLike[str]) -> list[int]:
    """Sorted distinct start and end offsets of the tensors in ``path`` (bytes)."""
    out = set()
    for off, length in tensor_ranges(path):
        out.add(off)
        out.add(off + length)
    return sorted(out)


def _embedded_ranges(p: Path) -> list[tuple[int, int]]:
    model = _load(p)
    ranges = []
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            pos = 0
            for t in model.graph.initializer:  # type: ignore[attr-defined]
                raw = bytes(t.raw_data)
                if len(raw) < 64:  # too small to place reliably, and too small to matter
                    continue
                at = m.find(raw, pos)
                if at < 0:
                    at = m.find(raw)
                if at < 0:
                    continue
                ranges.append((at, len(raw)))
                pos = at + len(raw)
    return sorted(ranges)


def _external_ranges(p: Path) -> list[tuple[int, int]]:
    ranges = []
    models = sorted(p.parent.glob("*.onnx"))
    for onnx_path in models:
        model = _load(onnx_path)
        for t in model.graph.initializer:  # type: ignore[attr-defined]
            info = {e.key: e.value for e in t.external_data}
            if info.get("location") != p.name:
                continue
            try:
                off = int(info.get("offset", "0"))
                length = int(info["length"]) if "length" in info else -1
            except ValueError:
                raise UsageError(f"{onnx_path}: tensor {t.name!r} has a bad offset") from None
            if length >= 0:
                ranges.append((off, length))
    if not ranges:
        raise UsageError(f"{p}: no ONNX model beside it stores tensors in this file")
    return sorted(ranges)
