"""Chunk downloads of a CVMFS client, read back from its cache directory's file times.

Both ``cvmfs2`` and the emulated ``cmio-simfs`` download an object into a new file under
``<cache>/txn/`` and rename it to ``<cache>/XX/<rest of hash>`` once it is verified.  The
rename keeps the inode, so the cached file's **birth time** is when the download started
(its temporary file was created) and its **change time** is when it ended (the rename).
Matching the objects against a file's chunk list (``user.chunk_list``) gives every chunk
fetched during a run, with its interval, without any help from the client and without
opening a file on the mount (which would download an unchunked one).

Precision: both times come from the kernel's coarse clock (``CLOCK_REALTIME_COARSE``, one
tick: 4 ms at HZ=250), which lags the true instant by up to one tick; each is placed at the
middle of its tick (``+ resolution / 2``), so the error is at most half a tick.  They are
converted to CLOCK_MONOTONIC with :func:`cvmfs_modelio.core.clocks.realtime_minus_monotonic`.
Events: source FETCH, op FETCH, ``offset``/``length`` the chunk in its file, ``aux`` the
chunk index, ``result`` the cached (decompressed) bytes.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.events import Events, Op, Source, empty_events

AT_FDCWD = -100
STATX_CTIME = 0x80
STATX_BTIME = 0x800
_STATX_SIZE = 256
_BTIME_OFF, _CTIME_OFF = 80, 96

_libc: Any = None


def statx_times(path: str | os.PathLike[str]) -> tuple[int | None, int]:
    """(birth time or None, change time) of ``path`` in CLOCK_REALTIME ns."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    rc = _libc.statx(AT_FDCWD, os.fsencode(path), 0, STATX_BTIME | STATX_CTIME, buf)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    (mask,) = struct.unpack_from("<I", buf.raw, 0)
    bs, bn = struct.unpack_from("<qI", buf.raw, _BTIME_OFF)
    cs, cn = struct.unpack_from("<qI", buf.raw, _CTIME_OFF)
    birth = bs * 1_000_000_000 + bn if mask & STATX_BTIME else None
    return birth, cs * 1_000_000_000 + cn


@dataclass(frozen=True)
class ChunkFetch:
    """One chunk downloaded during a run (CLOCK_MONOTONIC ns)."""

    file: str
    index: int
    offset: int
    size: int
    start_ns: int
    end_ns: int
    start_exact: bool  # False: no birth time, start = end


def cached_object(cache: Path, hexhash: str) -> Path | None:
    """The cache file of an object, or None if it is not cached."""
    d = cache / hexhash[:2]
    try:
        names = os.listdir(d)
    except OSError:
        return None
    rest = hexhash[2:]
    for n in names:
        if n.startswith(rest):
            return d / n
    return None


def coarse_tick_ns() -> int:
    """Resolution of the clock that stamps file times (``CLOCK_REALTIME_COARSE``), in ns."""
    import time

    clock = getattr(time, "CLOCK_REALTIME_COARSE", 5)  # 5: Linux's number, absent in Python
    try:
        return int(time.clock_getres(clock) * 1e9)
    except OSError:
        return 0


def chunk_fetches(
    mount: Any,
    files: list[Path],
    since_mono_ns: int,
    until_mono_ns: int,
    offset_ns: int,
) -> list[ChunkFetch]:
    """Chunks of ``files`` (on ``mount``, a :class:`cvmfs_modelio.mounts.CvmfsMount`) whose
    download ended within ``[since, until]`` (CLOCK_MONOTONIC; ``offset_ns`` = realtime -
    monotonic), sorted by start."""
    cache = mount.cache_dir()
    half = coarse_tick_ns() // 2
    out: list[ChunkFetch] = []
    for f in files:
        layout = mount.layout(f)
        if layout.hashes is None:
            continue
        for i, h in enumerate(layout.hashes):
            obj = cached_object(cache, h)
            if obj is None:
                continue
            try:
                birth, change = statx_times(obj)
            except OSError:
                continue
            end = change - offset_ns + half
            if not since_mono_ns <= end - 2 * half <= until_mono_ns:
                continue
            start = end if birth is None else min(end, birth - offset_ns + half)
            off = int(layout.offsets[i])
            size = int(layout.sizes[i])
            out.append(ChunkFetch(os.path.realpath(f), i, off, size, start, end, birth is not None))
    out.sort(key=lambda c: (c.start_ns, c.file, c.index))
    return out


def fetch_events(fetches: list[ChunkFetch], file_ids: dict[str, int], pid: int) -> Events:
    """The fetches as event records (source FETCH) naming ``file_ids[file]``."""
    ev = empty_events(len(fetches))
    for k, c in enumerate(fetches):
        ev[k]["t_start_ns"] = c.start_ns
        ev[k]["duration_ns"] = c.end_ns - c.start_ns
        ev[k]["offset"] = c.offset
        ev[k]["length"] = c.size
        ev[k]["result"] = c.size
        ev[k]["aux"] = c.index
        ev[k]["pid"] = pid
        ev[k]["tid"] = -1
        ev[k]["file_id"] = file_ids.get(c.file, -1)
        ev[k]["source"] = int(Source.FETCH)
        ev[k]["op"] = int(Op.FETCH)
    return ev
