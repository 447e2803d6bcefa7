"""Decode the kernel tracepoints a run recorded (:mod:`cvmfs_modelio.trace.tracefs`) into events.

The ring-buffer pages in ``TRACE/kernel/cpuN.raw`` have the layout the kernel describes in
``events/header_page`` and ``events/header_event`` (saved in ``formats.json``): a page header
(64-bit time stamp, commit word whose low 30 bits are the bytes used and whose top bits flag
missed events), then records with a 32-bit header (5-bit type/length, 27-bit time delta).
Each tracepoint becomes an event of source PERF ("kernel tracepoints") on CLOCK_MONOTONIC:

- ``mm_filemap_add_to_page_cache``: op PAGE_IN, ``offset`` page index << 12, ``length``
  4 KiB << order (a folio), ``result`` = length;
- ``mm_filemap_fault``: op PAGE_FAULT, one 4 KiB page, ``aux`` 0;
- ``mm_filemap_map_pages``: op PAGE_FAULT, the pages fault-around mapped, ``aux`` 1;
- ``fuse_request_send`` + ``fuse_request_end`` (paired by connection and request id): ops
  FUSE_READ, FUSE_OPEN, FUSE_RELEASE, LOOKUP, GETXATTR (NONE for others), ``offset`` -1,
  ``length`` request bytes, ``result`` reply bytes - 16 (the header) or -error, ``aux`` the
  opcode, ``err`` -error, ``duration`` send..end.

Page events are kept only for files of the trace's file table (matched by device and inode);
FUSE requests name the mount's root (a file-table entry added for it).  ``pid`` is the
process of the task (from ``task_newtask``: a thread belongs to its creator's process), or
-1 when the task was created before the recording started and never showed up in the tracer's
own events.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio.core.events import EventFileError, Events, FileEntry, Op, Source, empty_events
from cvmfs_modelio.trace.tracefs import KERNEL_DIR, read_status

_PAGE_HDR = struct.Struct("<Qq")
_U32 = struct.Struct("<I")
_COMMIT_MASK = (1 << 30) - 1
_MISSED_EVENTS = 1 << 31
_MISSED_STORED = 1 << 30
FUSE_HEADER_BYTES = 16  # struct fuse_out_header, counted in fuse_request_end's len
CLONE_THREAD = 0x00010000

# FUSE opcodes (include/uapi/linux/fuse.h) to ops of the event table.
FUSE_OPS = {1: Op.LOOKUP, 14: Op.FUSE_OPEN, 15: Op.FUSE_READ, 18: Op.FUSE_RELEASE, 22: Op.GETXATTR}


@dataclass
class Decoded:
    """Events decoded from the ring buffer, with what the status says about losses."""

    events: Events
    extra_files: dict[int, FileEntry]
    missed_pages: int  # pages flagged "missed events" by the kernel
    status: dict[str, Any]


def _field_reader(fields: dict[str, list[int]]) -> dict[str, tuple[int, int, bool]]:
    return {k: (int(v[0]), int(v[1]), bool(v[2])) for k, v in fields.items()}


def _get(rec: bytes, spec: tuple[int, int, bool]) -> int:
    off, size, signed = spec
    return int.from_bytes(rec[off : off + size], "little", signed=signed)


def decode_pages(data: bytes, subbuf: int, name: str) -> tuple[list[tuple[int, bytes]], int]:
    """All ``(timestamp_ns, payload)`` records of the raw pages in ``data``, and the number
    of pages the kernel flagged with missed events.  EventFileError on a damaged page."""
    if len(data) % subbuf:
        raise EventFileError(f"{name}: {len(data)} bytes is not whole {subbuf}-byte pages")
    try:
        return _decode_pages(data, subbuf, name)
    except struct.error:
        raise EventFileError(f"{name}: damaged record (runs past its page)") from None


def _decode_pages(data: bytes, subbuf: int, name: str) -> tuple[list[tuple[int, bytes]], int]:
    out: list[tuple[int, bytes]] = []
    missed = 0
    for base in range(0, len(data), subbuf):
        ts, commit = _PAGE_HDR.unpack_from(data, base)
        used = commit & _COMMIT_MASK
        if commit & (_MISSED_EVENTS | _MISSED_STORED):
            missed += 1
        pos = base + _PAGE_HDR.size
        end = pos + used
        if end > base + subbuf:
            raise EventFileError(f"{name}: page at byte {base} claims {used} bytes")
        while pos < end:
            (hdr,) = _U32.unpack_from(data, pos)
            tl = hdr & 31
            delta = hdr >> 5
            if tl == 29:  # padding (or the end of the page's data)
                if delta == 0:
                    break
                (ln,) = _U32.unpack_from(data, pos + 4)
                pos += 4 + ln
                continue
            if tl == 30:  # time extend
                (hi,) = _U32.unpack_from(data, pos + 4)
                ts += (hi << 27) | delta
                pos += 8
                continue
            if tl == 31:  # absolute time stamp (lower 59 bits)
                (hi,) = _U32.unpack_from(data, pos + 4)
                stamp = (hi << 27) | delta
                top = ts & ~((1 << 59) - 1)
                stamp |= top
                if stamp < ts and top:
                    stamp += 1 << 59
                ts = stamp
                pos += 8
                continue
            ts += delta
            if tl == 0:
                (ln,) = _U32.unpack_from(data, pos + 4)
                start, size = pos + 8, ln - 4
                pos += 4 + ln
            else:
                start, size = pos + 4, tl * 4
                pos += 4 + size
            if size < 8 or pos > end:
                raise EventFileError(f"{name}: damaged record in page at byte {base}")
            out.append((ts, data[start : start + size]))
    return out, missed


def decode(
    trace_dir: str | os.PathLike[str],
    files: dict[int, FileEntry],
    first_free_id: int,
    tids: dict[int, int] | None = None,
) -> Decoded | None:
    """Kernel events of a trace directory, or None if it recorded none.

    ``files`` is the trace's file table (page events are kept for these files only); FUSE
    mounts get new entries numbered from ``first_free_id``; ``tids`` maps thread ids the
    tracer saw to their process ids.
    """
    d = Path(trace_dir)
    kdir = d / KERNEL_DIR
    status = read_status(d) or {}
    fmt_path = kdir / "formats.json"
    if status.get("status") != "recorded" or not fmt_path.is_file():
        return None
    try:
        fmt = json.loads(fmt_path.read_text())
        subbuf = int(fmt["subbuf_bytes"])
        formats = fmt["events"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EventFileError(f"{fmt_path}: damaged") from None
    by_id: dict[int, tuple[str, dict[str, tuple[int, int, bool]]]] = {}
    for name, spec in formats.items():
        by_id[int(spec["id"])] = (name, _field_reader(spec["fields"]))
    records: list[tuple[int, bytes]] = []
    missed = 0
    for raw in sorted(kdir.glob("cpu*.raw")):
        recs, m = decode_pages(raw.read_bytes(), subbuf, str(raw))
        records.extend(recs)
        missed += m
    records.sort(key=lambda r: r[0])

    keys = {(e.dev, e.inode): fid for fid, e in files.items()}
    mounts: dict[int, int] = {}
    extra: dict[int, FileEntry] = {}
    next_id = first_free_id
    for conn, mp in (status.get("fuse_mounts") or {}).items():
        c = int(conn)
        extra[next_id] = FileEntry(next_id, mp, 0, os.makedev(c >> 20, c & 0xFFFFF), 1)
        mounts[c] = next_id
        next_id += 1

    tgid: dict[int, int] = dict(tids or {})
    root = status.get("root_pid")
    if isinstance(root, int):
        tgid[root] = root
    rows: list[tuple[int, int, int, int, int, int, int, int, int, int]] = []
    pending: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for ts, rec in records:
        (etype,) = struct.unpack_from("<H", rec, 0)
        hit = by_id.get(etype)
        if hit is None:
            continue
        name, f = hit
        tid = _get(rec, f["common_pid"])
        if name == "task_newtask":
            child = _get(rec, f["pid"])
            flags = _get(rec, f["clone_flags"])
            parent = tgid.get(tid)
            if parent is not None:
                tgid[child] = parent if flags & CLONE_THREAD else child
            continue
        if name in ("mm_filemap_add_to_page_cache", "mm_filemap_fault", "mm_filemap_map_pages"):
            kdev = _get(rec, f["s_dev"])
            ino = _get(rec, f["i_ino"])
            fid = keys.get((os.makedev(kdev >> 20, kdev & 0xFFFFF), ino))
            if fid is None:
                continue
            index = _get(rec, f["index"])
            aux = 0
            if name == "mm_filemap_fault":
                op, length = Op.PAGE_FAULT, 4096
            elif name == "mm_filemap_map_pages":
                last = _get(rec, f["last_index"])
                op, length, aux = Op.PAGE_FAULT, (max(last, index) - index + 1) * 4096, 1
            else:
                op, length = Op.PAGE_IN, 4096 << _get(rec, f["order"])
            rows.append((ts, 0, tid, fid, index << 12, length, length, aux, 0, int(op)))
        elif name == "fuse_request_send":
            conn = _get(rec, f["connection"])
            key = (conn, _get(rec, f["unique"]))
            pending[key] = (ts, tid, _get(rec, f["opcode"]), _get(rec, f["len"]))
        elif name == "fuse_request_end":
            conn = _get(rec, f["connection"])
            key = (conn, _get(rec, f["unique"]))
            sent = pending.pop(key, None)
            if sent is None:
                continue  # sent before the recording started
            t0, stid, opcode, inlen = sent
            fid = mounts.get(conn, -1)
            error = _get(rec, f["error"])
            reply = _get(rec, f["len"]) - FUSE_HEADER_BYTES
            op = FUSE_OPS.get(opcode, Op.NONE)
            result = -error if error else max(reply, 0)
            rows.append((t0, ts - t0, stid, fid, -1, inlen, result, opcode, -error, int(op)))
    ev = empty_events(len(rows))
    if rows:
        a = np.array(rows, dtype=np.int64)
        ev["t_start_ns"], ev["duration_ns"], ev["tid"] = a[:, 0], a[:, 1], a[:, 2]
        ev["file_id"], ev["offset"], ev["length"] = a[:, 3], a[:, 4], a[:, 5]
        ev["result"], ev["aux"], ev["err"], ev["op"] = a[:, 6], a[:, 7], a[:, 8], a[:, 9]
        ev["pid"] = [tgid.get(int(t), -1) for t in a[:, 2]]
        ev["source"] = int(Source.PERF)
    status = dict(status)
    status["missed_pages"] = missed
    status["unpaired_fuse_requests"] = len(pending)
    return Decoded(ev, extra, missed, status)
