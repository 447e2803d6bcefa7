"""Exports of a trace: Chrome trace-event JSON (Perfetto), CSV, and fio iolog v3."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from cvmfs_modelio.core.events import EVENT_DTYPE, EventLog, Op, Source
from cvmfs_modelio.trace.tracer import READ_OPS

FORMATS = ("chrome", "csv", "fio")


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
        if "pid" not in proc:
            continue  # perf.cmtr: events carry the pids of the processes they name
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
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for row in csv_rows(log):
            w.writerow(row)
        return buf.getvalue()
    if fmt == "fio":
        return fio_iolog(log)
    raise ValueError(f"unknown export format {fmt!r}")
