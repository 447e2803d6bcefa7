"""Where every tensor of a model lies in its files: the map from a byte offset back to a tensor.

:func:`inspect_model` detects the format from the file's content (magic numbers, structure;
the suffix only breaks ties), hands the file to the reader of that format
(``cvmfs_modelio.models.formats.<format>``) and returns a :class:`ModelMap`: every tensor's
name, dtype, shape, file, byte offset and length, and for each file the share that is weights.

Readers treat the file as hostile: every length read from it is checked against the file's
size before anything is allocated from it, spans outside a file are refused, and a failure is
one :class:`~cvmfs_modelio.core.errors.UsageError` naming the user's file and the reason.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError

MAX_ALIGNMENT = 1 << 20


def alignment_of(offset: int) -> int:
    """Largest power of two (at most 1 MiB) dividing ``offset``; 1 MiB for offset 0."""
    if offset <= 0:
        return MAX_ALIGNMENT
    return min(offset & -offset, MAX_ALIGNMENT)


@dataclass(frozen=True)
class TensorSpan:
    """One tensor's bytes in one file (all sizes and offsets in bytes)."""

    name: str
    dtype: str  # numpy-style name: "float32", "int64", "bfloat16", ...
    shape: tuple[int, ...]
    file: str  # absolute path of the file holding the bytes
    offset_bytes: int
    length_bytes: int

    @property
    def alignment(self) -> int:
        """Largest power of two (<= 1 MiB) dividing ``offset_bytes``."""
        return alignment_of(self.offset_bytes)

    @property
    def end_bytes(self) -> int:
        return self.offset_bytes + self.length_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "file": self.file,
            "offset_bytes": self.offset_bytes,
            "length_bytes": self.length_bytes,
            "alignment_bytes": self.alignment,
        }


@dataclass(frozen=True)
class FileShare:
    """One file of a model: its size and how much of it is tensor bytes."""

    path: str
    size_bytes: int
    weight_bytes: int  # bytes covered by at least one tensor (overlaps counted once)

    @property
    def metadata_bytes(self) -> int:
        """Everything that is not tensor bytes: graph, headers, padding."""
        return self.size_bytes - self.weight_bytes

    @property
    def weight_share(self) -> float:
        return self.weight_bytes / self.size_bytes if self.size_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "weight_bytes": self.weight_bytes,
            "metadata_bytes": self.metadata_bytes,
        }


@dataclass(frozen=True)
class ModelMap:
    """A model's files and tensors; ``tensors`` sorted by (file, offset).

    ``notes`` say what the reader saw but could not place (e.g. HDF5 datasets stored in
    object headers, tensors of a format variant it does not decode).
    """

    format: str  # "onnx", "ort", "safetensors", "gguf", "torch-zip", "keras-h5", ...
    path: str
    files: tuple[FileShare, ...]
    tensors: tuple[TensorSpan, ...]
    notes: tuple[str, ...] = ()
    _index: dict[str, tuple[list[int], list[int], int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Per file: the tensors' start offsets and the running maximum of their ends (both
        # non-decreasing), so an overlap query is two bisections even when spans overlap.
        for name, group in itertools.groupby(enumerate(self.tensors), key=lambda it: it[1].file):
            items = list(group)
            first = items[0][0]
            starts = [t.offset_bytes for _, t in items]
            ends = list(itertools.accumulate((t.end_bytes for _, t in items), max))
            self._index[name] = (starts, ends, first)

    @property
    def weight_bytes(self) -> int:
        return sum(f.weight_bytes for f in self.files)

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def tensors_in(self, file: str, offset: int, length: int) -> list[TensorSpan]:
        """Tensors of ``file`` with at least one byte in ``[offset, offset + length)``."""
        idx = self._index.get(file)
        if idx is None or length <= 0:
            return []
        starts, ends, first = idx
        lo = bisect.bisect_right(ends, offset)  # first tensor whose running end passes offset
        hi = bisect.bisect_left(starts, offset + length)  # tensors starting before the end
        return [
            t
            for t in self.tensors[first + lo : first + hi]
            if t.end_bytes > offset and t.length_bytes > 0
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "weight_bytes": self.weight_bytes,
            "files": [f.to_json() for f in self.files],
            "tensors": [t.to_json() for t in self.tensors],
            "notes": list(self.notes),
        }


def build_map(
    fmt: str,
    path: str | os.PathLike[str],
    files: Sequence[str | os.PathLike[str]],
    tensors: Iterable[TensorSpan],
    *,
    notes: Iterable[str] = (),
    allow_overlap: bool = False,
) -> ModelMap:
    """Check ``tensors`` against the files' sizes and assemble the :class:`ModelMap`.

    Every span must lie inside its file (one of ``files``); unless ``allow_overlap`` (formats
    where views share storage, e.g. PyTorch), two tensors may not share a byte.  ``path`` is
    the user's file, named in every error.
    """
    shown = os.fspath(path)
    sizes: dict[str, int] = {}
    for f in files:
        p = os.path.abspath(os.fspath(f))
        try:
            sizes[p] = os.stat(p).st_size
        except OSError as e:
            raise UsageError(f"{shown}: cannot read {p}: {e.strerror or e}") from None
    spans = sorted(tensors, key=lambda t: (t.file, t.offset_bytes, t.length_bytes, t.name))
    for t in spans:
        size = sizes.get(t.file)
        if size is None:
            raise UsageError(f"{shown}: tensor {t.name!r} is in {t.file}, not a file of the model")
        if t.offset_bytes < 0 or t.length_bytes < 0 or t.end_bytes > size:
            raise UsageError(
                f"{shown}: tensor {t.name!r} at offset {t.offset_bytes} length {t.length_bytes} "
                f"lies outside {t.file} ({size} bytes)"
            )
    shares = []
    for fname, size in sizes.items():
        covered = 0
        reach = -1
        prev: TensorSpan | None = None
        for t in (s for s in spans if s.file == fname):
            if t.length_bytes == 0:
                continue
            if t.offset_bytes < reach and not allow_overlap and prev is not None:
                raise UsageError(
                    f"{shown}: tensors {prev.name!r} and {t.name!r} overlap in {fname} "
                    f"(bytes {t.offset_bytes}..{min(reach, t.end_bytes)})"
                )
            covered += max(0, t.end_bytes - max(t.offset_bytes, reach))
            if t.end_bytes > reach:
                reach = t.end_bytes
                prev = t
        shares.append(FileShare(fname, size, covered))
    return ModelMap(fmt, os.path.abspath(shown), tuple(shares), tuple(spans), tuple(notes))


def inspect_model(path: str | os.PathLike[str]) -> ModelMap:
    """The tensor map of the model at ``path`` (format detected from content, not only suffix).

    ``path`` may also be a file that only holds weights (an ONNX external ``.data`` file, a
    TensorFlow ``.data-00000-of-00001`` shard): the model file beside it that names it is read.
    Raises UsageError (one line naming ``path``) for anything it cannot map.
    """
    from cvmfs_modelio.models.formats import read_model

    return read_model(Path(path))


def alignment_profile(m: ModelMap) -> dict[str, Any]:
    """How a model's tensors sit against page and chunk boundaries (weights by bytes).

    ``min_alignment_bytes``: the smallest alignment among tensors of at least 4 KiB (small
    tensors are packed by every writer and matter little); ``aligned_4k_share`` and
    ``aligned_64k_share``: the share of weight bytes in tensors whose offset is a multiple
    of 4 KiB / 64 KiB.
    """
    big = [t for t in m.tensors if t.length_bytes >= 4096]
    total = sum(t.length_bytes for t in m.tensors)
    a4 = sum(t.length_bytes for t in m.tensors if t.alignment >= 4096)
    a64 = sum(t.length_bytes for t in m.tensors if t.alignment >= 65536)
    return {
        "tensors": len(m.tensors),
        "min_alignment_bytes": min((t.alignment for t in big), default=None),
        "aligned_4k_share": a4 / total if total else 0.0,
        "aligned_64k_share": a64 / total if total else 0.0,
    }
