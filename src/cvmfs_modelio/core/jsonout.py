"""``--json PATH`` results: self-describing documents, written atomically.

Every result file has the same envelope (docs/results-format.md): ``schema`` (name and
version of the payload's layout), ``created_utc``, ``command_line`` and one ``environment``
record (:mod:`cvmfs_modelio.core.environment`); the payload's own keys sit beside them and
carry their units (``_ns``, ``_bytes``, ``_bytes_per_s``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.atomicio import write_atomic_bytes
from cvmfs_modelio.core.errors import UsageError

__all__ = ["check_dest", "envelope", "environment", "write_atomic", "write_json"]

SCHEMA_PREFIX = "cvmfs-modelio."


def environment(measured: Iterable[str | os.PathLike[str]] = (), **kw: Any) -> dict[str, Any]:
    """:func:`cvmfs_modelio.core.environment.environment`, imported when first needed: a
    command that only checks its output paths (``trace``) starts without ctypes & co."""
    from cvmfs_modelio.core.environment import environment as env

    return env(measured, **kw)


def envelope(
    schema: str, version: int = 1, measured: Iterable[str | os.PathLike[str]] = (), **env: Any
) -> dict[str, Any]:
    """The keys every result document starts with.

    ``schema`` names the payload's layout (``probe``, ``campaign``, ``bench.tracer``, ...);
    ``version`` changes whenever a key changes meaning or disappears.  ``measured`` are the
    paths the result is about (their file systems go into ``environment``).
    """
    return {
        "schema": {"name": SCHEMA_PREFIX + schema, "version": version},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(sys.argv),
        "environment": environment(measured, **env),
    }


def check_dest(
    path: str | os.PathLike[str] | None,
    measured: Iterable[str | os.PathLike[str]] = (),
    *,
    directory: bool = False,
) -> None:
    """UsageError unless ``path`` (an output file, ``-``: stdout) can be written.

    Called before a command does its work, so a bad output path costs nothing and never
    leaves a result half done: the path must not be a directory, its directory must exist
    (a file in its place is named), be writable, and not lie on a FUSE file system one of
    the ``measured`` paths is on (a CVMFS mount, real or emulated: the tool never writes
    to the file system it measures).  ``directory``: the output is a directory that is
    created if missing (``sim publish STORE``, ``trace -o``); its nearest existing
    ancestor must be a writable directory.
    """
    if path is None or os.fspath(path) == "-":
        return
    name = os.fspath(path)
    try:
        _check_dest(name, measured, directory)
    except PermissionError:
        # a directory on the way that we may not search
        raise UsageError(f"{name}: permission denied") from None


def _check_dest(name: str, measured: Iterable[str | os.PathLike[str]], directory: bool) -> None:
    dest = Path(os.path.abspath(name))
    if directory:
        if dest.exists() and not dest.is_dir():
            raise UsageError(f"{name}: exists and is not a directory")
        if dest.is_dir() and not os.access(dest, os.W_OK, effective_ids=True):
            raise UsageError(f"{name}: permission denied (cannot write in it)")
        base = dest if dest.is_dir() else dest.parent
    else:
        if dest.is_dir():
            raise UsageError(f"{name}: is a directory")
        base = dest.parent
    # The nearest existing ancestor tells why the path cannot be made.
    anc = base
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"{name}: {anc} is not a directory")
    if anc != base and not directory:
        raise UsageError(f"{name}: directory {base} does not exist")
    if not os.access(anc, os.W_OK, effective_ids=True):
        raise UsageError(f"{name}: permission denied (cannot write in {anc})")
    _check_not_measured(name, anc, measured)


def _check_not_measured(name: str, anc: Path, measured: Iterable[str | os.PathLike[str]]) -> None:
    try:
        dev = os.stat(anc).st_dev
    except OSError:
        return
    for m in measured:
        try:
            if os.stat(m).st_dev != dev:
                continue
        except OSError:
            continue
        fs = _fs_type(anc)
        if fs.startswith("fuse") or fs == "cvmfs":
            raise UsageError(
                f"{name}: on the file system being measured ({fs} holding {os.fspath(m)}); "
                "write results elsewhere"
            )


def _fs_type(path: Path) -> str:
    """The file system type of the mount holding ``path`` (``/proc/self/mounts``)."""
    from cvmfs_modelio.core.environment import mount_of

    m = mount_of(path)
    return m.fs_type if m else ""


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomicio.write_atomic_bytes`); a failure is
    a one-line UsageError naming the file."""
    try:
        write_atomic_bytes(path, text.encode("utf-8"), fsync=False)
    except OSError as e:
        raise UsageError(f"{os.fspath(path)}: cannot write: {e.strerror or e}") from None


def write_json(
    path: str | os.PathLike[str],
    payload: dict[str, Any],
    *,
    schema: str,
    version: int = 1,
    measured: Iterable[str | os.PathLike[str]] = (),
    tools: bool = False,
) -> None:
    """Write ``payload`` inside the :func:`envelope` as JSON; ``-`` is stdout; atomic otherwise."""
    # The envelope wins over a payload key of the same name: it is what readers rely on.
    doc = {**payload, **envelope(schema, version, measured, tools=tools)}
    text = json.dumps(doc, indent=1, sort_keys=True, default=_default) + "\n"
    if os.fspath(path) == "-":
        sys.stdout.write(text)
        return
    write_atomic(path, text)


def _default(o: object) -> Any:
    import numpy

    if isinstance(o, numpy.integer):
        return int(o)
    if isinstance(o, numpy.floating):
        return float(o)
    if isinstance(o, numpy.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
