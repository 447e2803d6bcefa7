"""Where an ONNX model's weight tensors lie in its files: preferred cuts for layout-aware chunking.

A thin view of the one ONNX reader (:mod:`cvmfs_modelio.models.formats.onnx`): for an
``.onnx`` file with embedded weights, the exact ``raw_data`` payload of every tensor (those
under 64 bytes are too small to matter as cuts and are left out); for an external data file
(``model.onnx.data``), the ``offset`` and ``length`` that the ``.onnx`` files beside it record
for tensors stored there.
"""

from __future__ import annotations

import os
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats import onnx as onnx_format
from cvmfs_modelio.models.paths import resolve_inside

MIN_EMBEDDED = 64


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
    w = onnx_format.walk_file(p)
    return sorted(
        (t.data_start, t.data_end - t.data_start)
        for t in w.tensors
        if t.data_field == "raw_data"
        and not t.location_external
        and t.data_end - t.data_start >= MIN_EMBEDDED
    )


def _external_ranges(p: Path) -> list[tuple[int, int]]:
    ranges = []
    want = p.resolve()
    for onnx_path in sorted(p.parent.glob("*.onnx")):
        w = onnx_format.walk_file(onnx_path)
        for t in w.tensors:
            loc = t.external.get("location")
            if not loc:
                continue
            try:
                if resolve_inside(onnx_path.parent, loc) != want:
                    continue
            except UsageError:
                continue
            try:
                off = int(t.external.get("offset", "0") or "0")
                length = int(t.external["length"]) if t.external.get("length") else -1
            except ValueError:
                raise UsageError(f"{onnx_path}: tensor {t.name!r} has a bad offset") from None
            if length >= 0:
                ranges.append((off, length))
    if not ranges:
        raise UsageError(f"{p}: no ONNX model beside it stores tensors in this file")
    return sorted(ranges)
