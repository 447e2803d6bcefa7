"""Exports of a trace: Chrome trace-event JSON (Perfetto), CSV, and fio iolog v3."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from cvmfs_modelio.core.events import EVENT_DTYPE, EventLog, Events, Op, Source
from cvmfs_modelio.trace.tracer import READ_OPS

FORMATS = ("chrome", "timeline", "csv", "fio")


def _t0(log: EventLog) -> int:
    return int(log.events["t_start_ns"].min()) if log.events.size else 0


def chrome_trace(log: EventLog) -> dict[str, Any]:
    """Chrome trace-event JSON: a track per (pid, tid), calls as complete slices ("X"),
    page-in runs as instants ("i"), and per file a counter of bytes seen resident.

    Timestamps are microseconds since the first event of the trace.
    """
    t0 = _t0(log)
    out: list[dict[str, Any]] = []
    for proc in log.meta.get("processes", []):
        if "pid" not in proc or proc.get("source", "preload") != "preload":
            continue  # kernel, ORT and fetch events carry the pids of the processes they name
        name = " ".join(str(a) for a in proc.get("argv") or ["?"])
        out.append(
            {"ph": "M", "name": "process_name", "pid": int(proc["pid"]), "args": {"name": name}}
        )
    resident: dict[tuple[int, int], int] = {}
    for e in log.events:
        fid = int(e["file_id"])
        path = log.files[fid].path if fid in log.files else ""
        op = Op(int(e["op"])).name.lower()
        src = Source(int(e["source"])).name.lower()
        ts = (int(e["t_start_ns"]) - t0) / 1000.0
        pid, tid = int(e["pid"]), int(e["tid"])
        args = {
            "file": path,
            "fd": int(e["fd"]),
            "offset": int(e["offset"]),
            "length": int(e["length"]),
            "result": int(e["result"]),
            "errno": int(e["err"]),
            "aux": int(e["aux"]),
        }
        if e["source"] == Source.MINCORE or e["source"] == Source.PERF:
            end = ts + int(e["duration_ns"]) / 1000.0
            out.append(
                {
                    "ph": "i",
                    "s": "t",
                    "name": f"{src}:{op}",
                    "cat": src,
                    "ts": end,
                    "pid": pid,
                    "tid": tid,
                    "args": {**args, "bound_ns": int(e["aux"])},
                }
            )
            if e["op"] in (Op.PAGE_IN, Op.PAGE_FAULT):
                key = (fid, int(e["op"]))
                resident[key] = resident.get(key, 0) + int(e["length"])
                what = "page cache" if e["op"] == Op.PAGE_IN else "mapped"
                name = f"{what} bytes ({src}) {os.path.basename(path)}"
                out.append(
                    {
                        "ph": "C",
                        "name": name,
                        "pid": pid,
                        "ts": end,
                        "args": {"bytes": resident[key]},
                    }
                )
        else:
            out.append(
                {
                    "ph": "X",
                    "name": op,
                    "cat": src,
                    "ts": ts,
                    "dur": int(e["duration_ns"]) / 1000.0,
                    "pid": pid,
                    "tid": tid,
                    "args": args,
                }
            )
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": {"t0_ns": t0}}


def csv_rows(log: EventLog) -> Iterator[list[str]]:
    """Header, then one row per event: every record field plus source, op and path names."""
    names = list(EVENT_DTYPE.names or ())
    yield [*names, "source_name", "op_name", "path"]
    for e in log.events:
        fid = int(e["file_id"])
        path = log.files[fid].path if fid in log.files else ""
        yield [
            *(str(int(e[n])) for n in names),
            Source(int(e["source"])).name.lower(),
            Op(int(e["op"])).name.lower(),
            path,
        ]


def fio_iolog(log: EventLog) -> str:
    """fio iolog version 3: the bytes the program read, in order, replayable with --read_iolog.

    Read-family calls become ``read OFFSET LENGTH`` of the bytes returned; page-ins of
    mappings (pagemap runs, what the program touched) become reads of those runs.
    Timestamps are milliseconds since the first event.  Paths with whitespace cannot be
    expressed in an iolog and are skipped.
    """
    t0 = _t0(log)
    ev = log.events
    pre = (ev["source"] == Source.PRELOAD) & np.isin(ev["op"], [int(o) for o in READ_OPS])
    pre &= ev["result"] > 0
    pre &= ev["offset"] >= 0
    faults = (ev["source"] == Source.MINCORE) & (ev["op"] == Op.PAGE_FAULT)
    sel = ev[(pre | faults) & (ev["file_id"] >= 0)]
    used = [int(f) for f in np.unique(sel["file_id"]) if f in log.files]
    ok = {f for f in used if not any(c.isspace() for c in log.files[f].path)}
    lines = ["fio version 3 iolog"]
    for f in sorted(ok):
        lines.append(f"0 {log.files[f].path} add")
    for f in sorted(ok):
        lines.append(f"0 {log.files[f].path} open")
    last = 0
    for e in sel:
        fid = int(e["file_id"])
        if fid not in ok:
            continue
        ms = max(last, (int(e["t_start_ns"]) - t0) // 1_000_000)
        last = ms
        length = int(e["length"]) if e["source"] == Source.MINCORE else int(e["result"])
        lines.append(f"{ms} {log.files[fid].path} read {int(e['offset'])} {length}")
    for f in sorted(ok):
        lines.append(f"{last} {log.files[f].path} close")
    return "\n".join(lines) + "\n"


def export_text(log: EventLog, fmt: str) -> str:
    """The export of ``log`` in format ``fmt`` (one of FORMATS) as text."""
    if fmt == "chrome":
        return json.dumps(chrome_trace(log))
    if fmt == "timeline":
        return json.dumps(timeline(log))
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for row in csv_rows(log):
            w.writerow(row)
        return buf.getvalue()
    if fmt == "fio":
        return fio_iolog(log)
    raise ValueError(f"unknown export format {fmt!r}")


# ------------------------------------------------------------------ one timeline


def _lanes(starts: list[int], ends: list[int]) -> list[int]:
    """Greedy interval partitioning: a lane per event so that no lane has overlaps."""
    lane_end: list[int] = []
    out = [0] * len(starts)
    for i in sorted(range(len(starts)), key=lambda k: starts[k]):
        for lane, end in enumerate(lane_end):
            if end <= starts[i]:
                lane_end[lane] = ends[i]
                out[i] = lane
                break
        else:
            lane_end.append(ends[i])
            out[i] = len(lane_end) - 1
    return out


def _runs(ev: Events, gap_ns: int) -> list[tuple[int, int, int, int, int]]:
    """Page events merged into runs: (start, end, offset, length, pages); contiguous offsets,
    at most ``gap_ns`` apart."""
    out: list[list[int]] = []
    for e in ev:
        t, off, ln = int(e["t_start_ns"]), int(e["offset"]), int(e["length"])
        end = t + int(e["duration_ns"])
        if out and out[-1][2] + out[-1][3] == off and t - out[-1][1] <= gap_ns:
            out[-1][1] = max(out[-1][1], end)
            out[-1][3] += ln
            out[-1][4] += 1
        else:
            out.append([t, end, off, ln, 1])
    return [(a, b, c, d, n) for a, b, c, d, n in out]


TRACK_PHASES = 1
TRACK_READ = 100
TRACK_MMAP = 200
TRACK_PAGEIN = 300
TRACK_FUSE = 400
TRACK_FETCH = 500
RUN_GAP_NS = 200_000


def timeline(log: EventLog) -> dict[str, Any]:
    """Chrome trace-event JSON (Perfetto) of a load, one track per kind on one clock.

    Under the measured process: ``ORT phases`` (the phases of ``ort.cmtr``, nested by
    depth), per file ``read() FILE`` (read-family calls), ``mmap FILE`` (mmap/munmap calls
    and touched-page runs), ``page-ins FILE`` (pages entering the page cache: kernel
    tracepoints, merged into runs) with a cumulative counter, ``FUSE requests`` (kernel,
    one lane per concurrent request) and ``chunk fetches`` (the client's downloads, one lane
    per concurrent one).  ``ts`` is microseconds since the earliest event
    (``otherData.t0_ns``, CLOCK_MONOTONIC); events are sorted by ``ts``.
    """
    ev = log.events
    t0 = _t0(log)
    procs = log.meta.get("processes", [])
    ort = next((p for p in procs if p.get("source") == "ort"), None)
    if ort is not None:
        pid = int(ort["pid"])
    else:
        pre = ev[ev["source"] == Source.PRELOAD]
        pid = int(pre["pid"][0]) if pre.size else 0

    def us(ns: int) -> float:
        return (ns - t0) / 1000.0

    out: list[dict[str, Any]] = []
    names: dict[int, str] = {}

    def slice_(tid: int, name: str, start: int, end: int, args: dict[str, Any], cat: str) -> None:
        out.append(
            {
                "ph": "X",
                "name": name,
                "cat": cat,
                "pid": pid,
                "tid": tid,
                "ts": us(start),
                "dur": max(0, end - start) / 1000.0,
                "args": args,
            }
        )

    # ORT phases
    marks = ev[(ev["source"] == Source.ORT) & (ev["op"] == Op.MARK)]
    mark_names = ort.get("marks", []) if ort else []
    if marks.size:
        names[TRACK_PHASES] = "ORT phases"
    for e in marks:
        i = int(e["aux"])
        info = mark_names[i] if 0 <= i < len(mark_names) else {"name": f"mark{i}"}
        s = int(e["t_start_ns"])
        slice_(TRACK_PHASES, str(info["name"]), s, s + int(e["duration_ns"]), dict(info), "phase")
    # per-file I/O
    model_files = sorted(
        {int(f) for f in np.unique(ev["file_id"][ev["source"] == Source.PRELOAD]) if f >= 0}
    )
    for k, fid in enumerate(model_files):
        path = log.files[fid].path if fid in log.files else str(fid)
        base = os.path.basename(path)
        fe = ev[ev["file_id"] == fid]
        pre = fe[(fe["source"] == Source.PRELOAD) & (fe["pid"] == pid)]
        reads = pre[np.isin(pre["op"], [int(o) for o in READ_OPS])]
        if reads.size:
            names[TRACK_READ + k] = f"read() {base}"
        for e in reads:
            s = int(e["t_start_ns"])
            slice_(
                TRACK_READ + k,
                Op(int(e["op"])).name.lower(),
                s,
                s + int(e["duration_ns"]),
                {"file": path, "offset": int(e["offset"]), "bytes": int(e["result"])},
                "io",
            )
        maps = pre[np.isin(pre["op"], [int(Op.MMAP), int(Op.MUNMAP)])]
        faults = fe[(fe["source"] == Source.MINCORE) & (fe["op"] == Op.PAGE_FAULT)]
        if maps.size or faults.size:
            names[TRACK_MMAP + k] = f"mmap {base}"
        items: list[tuple[int, int, str, dict[str, Any]]] = []
        for e in maps:
            s = int(e["t_start_ns"])
            items.append(
                (
                    s,
                    s + int(e["duration_ns"]),
                    Op(int(e["op"])).name.lower(),
                    {"file": path, "offset": int(e["offset"]), "length": int(e["length"])},
                )
            )
        # A touched-page run is an instant at the end of its sampling window.
        for e in faults:
            end = int(e["t_start_ns"]) + int(e["duration_ns"])
            items.append(
                (
                    end,
                    end,
                    "touched",
                    {
                        "file": path,
                        "offset": int(e["offset"]),
                        "bytes": int(e["length"]),
                        "within_ns": int(e["duration_ns"]),
                    },
                )
            )
        items.sort(key=lambda x: x[0])
        last_end = 0
        for s, e_, nm, args in items:
            s = max(s, last_end)  # syscalls on one track never overlap; keep them apart
            slice_(TRACK_MMAP + k, nm, s, max(s, e_), args, "mmap")
            last_end = max(s, e_)
        pins = fe[(fe["source"] == Source.PERF) & (fe["op"] == Op.PAGE_IN)]
        if not pins.size:
            pins = fe[(fe["source"] == Source.MINCORE) & (fe["op"] == Op.PAGE_IN)]
        if pins.size:
            names[TRACK_PAGEIN + k] = f"page-ins {base}"
        total = 0
        last_end = 0
        for s, e_, off, ln, n in _runs(pins, RUN_GAP_NS):
            s = max(s, last_end)
            e_ = max(s, e_)
            slice_(
                TRACK_PAGEIN + k,
                "page-in",
                s,
                e_,
                {"file": path, "offset": off, "bytes": ln, "pages": n},
                "pagein",
            )
            last_end = e_
            total += ln
            out.append(
                {
                    "ph": "C",
                    "name": f"paged in {base}",
                    "pid": pid,
                    "ts": us(e_),
                    "args": {"bytes": total},
                }
            )
    # FUSE requests and chunk fetches, one lane per concurrent one
    fuse = ev[(ev["source"] == Source.PERF) & (ev["offset"] == -1) & (ev["pid"] == pid)]
    fetch = ev[(ev["source"] == Source.FETCH) & (ev["op"] == Op.FETCH)]
    for evs, base_tid, label, cat in (
        (fuse, TRACK_FUSE, "FUSE requests", "fuse"),
        (fetch, TRACK_FETCH, "chunk fetches", "fetch"),
    ):
        starts = [int(e["t_start_ns"]) for e in evs]
        ends = [int(e["t_start_ns"]) + int(e["duration_ns"]) for e in evs]
        for e, s, end, lane in zip(evs, starts, ends, _lanes(starts, ends), strict=True):
            names[base_tid + lane] = label if lane == 0 else f"{label} ({lane + 1})"
            fid = int(e["file_id"])
            path = log.files[fid].path if fid in log.files else ""
            if cat == "fuse":
                nm = Op(int(e["op"])).name.lower() if int(e["op"]) else f"opcode {int(e['aux'])}"
                args = {"mount": path, "opcode": int(e["aux"]), "reply_bytes": int(e["result"])}
            else:
                nm = f"chunk {int(e['aux'])}"
                args = {
                    "file": path,
                    "chunk": int(e["aux"]),
                    "offset": int(e["offset"]),
                    "bytes": int(e["length"]),
                }
            slice_(base_tid + lane, nm, s, end, args, cat)
    out.sort(key=lambda x: (x["ts"], -x.get("dur", 0)))
    meta: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"model load (pid {pid})"}}
    ]
    for tid, name in sorted(names.items()):
        meta.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}
        )
        meta.append(
            {
                "ph": "M",
                "name": "thread_sort_index",
                "pid": pid,
                "tid": tid,
                "args": {"sort_index": tid},
            }
        )
    return {"traceEvents": meta + out, "displayTimeUnit": "ns", "otherData": {"t0_ns": t0}}
