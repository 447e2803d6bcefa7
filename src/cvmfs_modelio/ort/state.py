"""Cache states as the CVMFS client benchmark defines them, applied to one model's files.

- **cold**: client cache wiped and the kernel page cache of the files dropped;
- **warm**: the page cache dropped, the client cache kept;
- **hot**: nothing cleared.

On a CVMFS mount (real or emulated) the client cache goes through
:class:`cvmfs_modelio.mounts.CvmfsMount`; on local disk there is no client cache, so cold is
warm, and :func:`prepare` says so.  Where it can be checked without disturbing the state
(local files), the page-cache residency after preparing is measured with ``mincore``: a
cold or warm run whose pages are still resident is marked, never reported as clean.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError

STATES = ("cold", "warm", "hot")
PAGE = os.sysconf("SC_PAGESIZE")

_libc: Any = None


def resident_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of ``path`` in the page cache (``mincore`` on a shared read-only mapping; root
    or the owner gets the truth).  Opens the file: never call it on a cold CVMFS file."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mmap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed", os.fspath(path))
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = ctypes.create_string_buffer(pages)
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed", os.fspath(path))
            n = sum(b & 1 for b in vec.raw)
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)
    return min(size, n * PAGE)


@dataclass
class StateInfo:
    """What preparing a state did: where the files are, what was cleared, and checks."""

    state: str
    location: str  # "local", "sim" or "real"
    cleared: list[str] = field(default_factory=list)
    resident_bytes: dict[str, int] | None = None  # after preparing (local files only)
    notes: list[str] = field(default_factory=list)
    clean: bool = True  # False: the state is not what it claims (see notes)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prepare(
    state: str, files: Sequence[Path], mount: Any | None, display: dict[str, str]
) -> StateInfo:
    """Put ``files`` into ``state``; ``mount`` is the CvmfsMount holding them, or None."""
    if state not in STATES:
        raise UsageError(f"--state {state}: must be one of {', '.join(STATES)}")
    loc = "local" if mount is None else mount.kind
    info = StateInfo(state, loc)
    if state == "hot":
        info.cleared = []
    elif mount is not None and state == "cold":
        mount.clear_caches(files)
        info.cleared = ["client cache", "page cache"]
    else:
        _drop(files, display, sync=mount is None)
        info.cleared = ["page cache"]
        if state == "cold":
            info.notes.append("local disk: no client cache, so cold = warm (page cache dropped)")
    if mount is None:
        info.resident_bytes = {display.get(str(f), str(f)): resident_bytes(f) for f in files}
        if state != "hot":
            left = {k: v for k, v in info.resident_bytes.items() if v > 0}
            if left:
                info.clean = False
                name, n = next(iter(left.items()))
                info.notes.append(
                    f"{name}: {n} bytes still in the page cache after dropping it "
                    "(mapped or locked by another process?): not a clean "
                    f"{state} run"
                )
    return info


def _drop(files: Sequence[Path], display: dict[str, str], sync: bool) -> None:
    """posix_fadvise(DONTNEED) per file; ``sync`` (local files) writes dirty pages back first,
    which DONTNEED would otherwise leave in the cache."""
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise UsageError(f"{display.get(str(f), str(f))}: cannot open: {e.strerror}") from None
        try:
            if sync:
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
