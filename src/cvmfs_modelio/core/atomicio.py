"""Atomic file replacement: every result file is written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename.

    A reader never sees half a file, and on any failure (including KeyboardInterrupt) the
    temporary file is removed and the old ``path``, if any, is left as it was.  ``fsync``
    makes the content durable before the rename (stores); plain reports may skip it.
    Errors propagate unchanged: callers decide how to report them.
    """
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
