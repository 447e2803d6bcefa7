"""Containment of paths that a model file names (ONNX external data, shard names, archive entries).

Every byte of a model is controlled by whoever wrote it; a ``location`` of
``../../etc/passwd`` or ``/etc/shadow`` must never make a command read (or publish) a file
outside the model's own directory.  One function decides, so every command refuses the same way.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from cvmfs_modelio.core.errors import UsageError


def resolve_inside(model_dir: str | os.PathLike[str], location: str, *, what: str = "") -> Path:
    """The file ``location`` (relative, as written in a model) names inside ``model_dir``.

    Refused with a UsageError naming ``location`` when it is empty, absolute, contains a NUL
    byte or a ``..`` component, or resolves (symbolic links included, at any depth) to a path
    outside ``model_dir``.  ``what`` prefixes the message (e.g. the model's path).  The result
    is the resolved absolute path; whether the file exists is the caller's question.
    """
    prefix = f"{what}: " if what else ""
    if not location:
        raise UsageError(f"{prefix}empty file location")
    if "\0" in location:
        raise UsageError(f"{prefix}file location {location!r} contains a NUL byte")
    # Windows separators are separators to ONNX writers too: treat both as such.
    parts = PurePosixPath(location.replace("\\", "/"))
    if parts.is_absolute() or (len(location) > 1 and location[1] == ":"):
        raise UsageError(f"{prefix}file location {location!r} is absolute (must be relative)")
    if ".." in parts.parts:
        raise UsageError(f"{prefix}file location {location!r} contains '..'")
    base = Path(model_dir).resolve()
    target = (base / Path(*parts.parts)).resolve()
    if target != base and base not in target.parents:
        raise UsageError(f"{prefix}file location {location!r} resolves to {target}, outside {base}")
    if target == base:
        raise UsageError(f"{prefix}file location {location!r} names the model's directory")
    return target
