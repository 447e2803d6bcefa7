"""The one event table that every vantage point fills, and its on-disk format.

The record is defined once in C++ (``csrc/common/event.h``); ``EVENT_DTYPE`` is its
numpy twin and :func:`check_native_layout` proves the two agree.  The file format is
documented in ``docs/event-format.md``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.core.errors import UsageError, os_reason

EVENT_VERSION = 1

EVENT_DTYPE = np.dtype(
    [
        ("t_start_ns", "<i8"),
        ("duration_ns", "<i8"),
        ("offset", "<i8"),
        ("length", "<i8"),
        ("result", "<i8"),
        ("aux", "<i8"),
        ("pid", "<i4"),
        ("tid", "<i4"),
        ("file_id", "<i4"),
        ("fd", "<i4"),
        ("err", "<i4"),
        ("minflt", "<i4"),
        ("majflt", "<i4"),
        ("source", "<u2"),
        ("op", "<u2"),
    ]
)
assert EVENT_DTYPE.itemsize == 80

Events = npt.NDArray[np.void]


class Source(IntEnum):
    """Vantage point that produced an event (append only, as in event.h)."""

    UNKNOWN = 0
    PROBE = 1
    PRELOAD = 2
    MINCORE = 3
    PERF = 4
    FUSE = 5
    FETCH = 6
    HTTP_SERVER = 7
    CVMFS_LOG = 8
    ORT = 9


class Op(IntEnum):
    """Operation (append only, as in event.h)."""

    NONE = 0
    OPEN = 1
    CLOSE = 2
    READ = 3
    PREAD = 4
    READV = 5
    PREADV = 6
    LSEEK = 7
    MMAP = 8
    MUNMAP = 9
    MADVISE = 10
    FADVISE = 11
    READAHEAD = 12
    STAT = 13
    DUP = 14
    FOPEN = 15
    FREAD = 16
    FCLOSE = 17
    MMAP_TOUCH = 18
    PAGE_IN = 19
    PAGE_FAULT = 20
    FUSE_OPEN = 21
    FUSE_READ = 22
    FUSE_RELEASE = 23
    FETCH = 24
    HTTP_REQUEST = 25
    MARK = 26
    FSEEK = 27
    FCNTL = 28
    GETXATTR = 29
    LOOKUP = 30


def empty_events(n: int = 0) -> Events:
    """``n`` blank records (offsets, file ids, fds and fault counts set to -1)."""
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    for name in ("offset", "file_id", "fd", "minflt", "majflt"):
        ev[name] = -1
    return ev


def check_native_layout() -> None:
    """Raise RuntimeError unless the compiled record matches ``EVENT_DTYPE`` exactly."""
    from cvmfs_modelio import _native

    if int(_native.EVENT_SIZE) != EVENT_DTYPE.itemsize:
        raise RuntimeError("native event size differs from EVENT_DTYPE")
    if int(_native.EVENT_VERSION) != EVENT_VERSION:
        raise RuntimeError("native event version differs")
    native = [(str(n), int(o), int(s)) for n, o, s in _native.EVENT_FIELDS]
    fields: dict[str, Any] = dict(EVENT_DTYPE.fields or {})
    ours = [(name, int(spec[1]), spec[0].itemsize) for name, spec in fields.items()]
    if native != ours:
        raise RuntimeError(f"native event layout {native} differs from {ours}")


# ---------------------------------------------------------------- file format

MAGIC = b"CMIOEVT1"
FRAME_EVENTS = 1
FRAME_FILE = 2
FRAME_META = 3
_HEADER = struct.Struct("<8sIIQ")
_FRAME = struct.Struct("<II")
_FILE_FIXED = struct.Struct("<iIqQQ")
_MAX_META = 64 << 20


@dataclass(frozen=True)
class FileEntry:
    """One row of the file table that events point into by ``file_id``."""

    file_id: int
    path: str
    size: int
    dev: int = 0
    inode: int = 0


@dataclass
class EventLog:
    """An event table with its file table and metadata (what the file format holds)."""

    events: Events
    files: dict[int, FileEntry] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class EventFileError(UsageError):
    """A damaged, truncated or foreign event file."""


def write_event_file(path: str | os.PathLike[str], log: EventLog) -> None:
    """Write ``log`` atomically (temporary file in the same directory, then rename)."""
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    meta = json.dumps(log.meta, sort_keys=True).encode()
    events = np.ascontiguousarray(log.events, dtype=EVENT_DTYPE)
    try:
        with open(tmp, "wb") as f:
            f.write(_HEADER.pack(MAGIC, EVENT_VERSION, EVENT_DTYPE.itemsize, len(meta)))
            f.write(meta)
            for entry in log.files.values():
                p = entry.path.encode("utf-8", "surrogateescape")
                f.write(_FRAME.pack(FRAME_FILE, _FILE_FIXED.size + len(p)))
                f.write(_FILE_FIXED.pack(entry.file_id, 0, entry.size, entry.dev, entry.inode))
                f.write(p)
            per_frame = (1 << 30) // EVENT_DTYPE.itemsize
            for start in range(0, len(events), per_frame):
                chunk = events[start : start + per_frame]
                f.write(_FRAME.pack(FRAME_EVENTS, chunk.nbytes))
                f.write(chunk.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_event_file(path: str | os.PathLike[str]) -> EventLog:
    """Read an event file; a damaged or truncated one raises EventFileError (one line)."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as e:
        raise EventFileError(f"{name}: {os_reason(e)}") from None
    return parse_event_bytes(data, name)


def parse_event_bytes(data: bytes, name: str = "<bytes>") -> EventLog:
    """Parse the bytes of an event file.  Never raises anything but EventFileError."""
    if len(data) < _HEADER.size:
        raise EventFileError(f"{name}: truncated header ({len(data)} bytes)")
    magic, version, recsize, mlen = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise EventFileError(f"{name}: not an event file (bad magic)")
    if version != EVENT_VERSION:
        raise EventFileError(f"{name}: unsupported format version {version}")
    if recsize != EVENT_DTYPE.itemsize:
        raise EventFileError(f"{name}: record size {recsize}, expected {EVENT_DTYPE.itemsize}")
    pos = _HEADER.size
    if mlen > _MAX_META or pos + mlen > len(data):
        raise EventFileError(f"{name}: truncated metadata")
    meta = _json_object(data[pos : pos + mlen], name)
    pos += mlen
    files: dict[int, FileEntry] = {}
    chunks: list[Events] = []
    while pos < len(data):
        if pos + _FRAME.size > len(data):
            raise EventFileError(f"{name}: truncated frame header at byte {pos}")
        ftype, flen = _FRAME.unpack_from(data, pos)
        pos += _FRAME.size
        if pos + flen > len(data):
            raise EventFileError(f"{name}: truncated frame at byte {pos - _FRAME.size}")
        payload = data[pos : pos + flen]
        pos += flen
        if ftype == FRAME_EVENTS:
            if flen % EVENT_DTYPE.itemsize:
                raise EventFileError(f"{name}: event frame of {flen} bytes is not whole records")
            chunks.append(np.frombuffer(payload, dtype=EVENT_DTYPE))
        elif ftype == FRAME_FILE:
            if flen < _FILE_FIXED.size:
                raise EventFileError(f"{name}: file frame of {flen} bytes is too short")
            fid, _zero, size, dev, ino = _FILE_FIXED.unpack_from(payload, 0)
            p = payload[_FILE_FIXED.size :].decode("utf-8", "surrogateescape")
            files[fid] = FileEntry(fid, p, size, dev, ino)
        elif ftype == FRAME_META:
            meta.update(_json_object(payload, name))
        else:
            raise EventFileError(f"{name}: unknown frame type {ftype} at byte {pos - flen - 8}")
    events = np.concatenate(chunks) if chunks else empty_events(0)
    return EventLog(events=events.copy(), files=files, meta=meta)


def _json_object(raw: bytes, name: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise EventFileError(f"{name}: metadata is not valid JSON") from None
    if not isinstance(obj, dict):
        raise EventFileError(f"{name}: metadata is not a JSON object")
    return obj
