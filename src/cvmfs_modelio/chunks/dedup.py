"""Storage and deduplication of a set of files under one chunking configuration.

CVMFS stores each chunk (or whole file) as one object named by the SHA-1 of its
zlib-compressed bytes (level 6, cvmfs-facts.md §1), so identical chunks of
different files (or versions) are stored, and fetched, once.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cvmfs_modelio.chunks.layouts import ChunkSpec, Layout, compute_layout, params_with_units
from cvmfs_modelio.core.errors import UsageError, os_error


@dataclass(frozen=True)
class StoredObject:
    """One object as CVMFS stores it: name (hex SHA-1 of the compressed bytes), sizes."""

    name: str
    size: int
    compressed_size: int


def file_objects(path: str, layout: Layout, level: int = 6) -> list[StoredObject]:
    """The objects a file is stored as under ``layout`` (zlib ``level``, as the publisher)."""
    out = []
    try:
        with open(path, "rb") as f:
            for off, size in zip(layout.offsets.tolist(), layout.sizes.tolist(), strict=True):
                f.seek(off)
                data = f.read(size)
                if len(data) != size:
                    raise UsageError(f"{path}: file changed while being read")
                z = zlib.compress(data, level)
                out.append(StoredObject(hashlib.sha1(z).hexdigest(), size, len(z)))
    except OSError as e:
        raise os_error(path, e) from None
    return out


@dataclass(frozen=True)
class Update:
    """What a client holding ``old`` fetches to load ``new`` (compressed bytes)."""

    old: str
    new: str
    fetch_bytes: int
    full_bytes: int
    new_objects: int


@dataclass(frozen=True)
class DedupResult:
    """Storage totals for one configuration (bytes)."""

    spec: ChunkSpec
    files: tuple[str, ...]
    n_objects: int  # unique objects stored
    n_references: int  # chunks over all files, duplicates included
    logical_bytes: int  # sum of file sizes
    stored_bytes_no_dedup: int  # compressed, every chunk stored
    stored_bytes: int  # compressed, unique chunks only
    updates: tuple[Update, ...]

    @property
    def dedup_ratio(self) -> float:
        """Compressed bytes without dedup / with dedup (1.0 = nothing shared)."""
        return self.stored_bytes_no_dedup / self.stored_bytes if self.stored_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result."""
        return {
            "config": self.spec.label(),
            "kind": self.spec.kind,
            "params": params_with_units(self.spec.params),
            "files": list(self.files),
            "n_objects": self.n_objects,
            "n_references": self.n_references,
            "logical_bytes": self.logical_bytes,
            "stored_bytes_no_dedup": self.stored_bytes_no_dedup,
            "stored_bytes": self.stored_bytes,
            "dedup_ratio": self.dedup_ratio,
            "updates": [u.__dict__ for u in self.updates],
        }


def dedup(paths: Sequence[str | os.PathLike[str]], spec: ChunkSpec) -> DedupResult:
    """Objects, stored bytes and version-to-version fetch cost of ``paths`` under ``spec``.

    ``paths`` are taken in order as successive versions: ``updates[i]`` is what a
    client holding ``paths[i]`` must fetch to load ``paths[i + 1]``.
    """
    names = [os.fspath(p) for p in paths]
    per_file: list[list[StoredObject]] = []
    for name in names:
        per_file.append(file_objects(name, compute_layout(name, spec)))
    unique: dict[str, StoredObject] = {}
    for objs in per_file:
        for o in objs:
            unique.setdefault(o.name, o)
    updates = []
    for i in range(len(names) - 1):
        held = {o.name for o in per_file[i]}
        needed = {o.name: o for o in per_file[i + 1]}
        new = [o for n, o in needed.items() if n not in held]
        updates.append(
            Update(
                old=names[i],
                new=names[i + 1],
                fetch_bytes=sum(o.compressed_size for o in new),
                full_bytes=sum(o.compressed_size for o in needed.values()),
                new_objects=len(new),
            )
        )
    return DedupResult(
        spec=spec,
        files=tuple(names),
        n_objects=len(unique),
        n_references=sum(len(o) for o in per_file),
        logical_bytes=sum(o.size for objs in per_file for o in objs),
        stored_bytes_no_dedup=sum(o.compressed_size for objs in per_file for o in objs),
        stored_bytes=sum(o.compressed_size for o in unique.values()),
        updates=tuple(updates),
    )
