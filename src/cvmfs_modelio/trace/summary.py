"""Per-file totals of a trace: what ``cvmfs-modelio trace-info`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvmfs_modelio.core.events import EventLog, Op, Source
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns
from cvmfs_modelio.trace.tracer import READ_OPS


@dataclass
class FileTotals:
    """Totals for one file of a trace (bytes, ns)."""

    file_id: int
    path: str
    size: int
    bytes_read: int = 0  # returned by read-family calls (syscalls and fread)
    bytes_mapped: int = 0  # asked by mmap calls
    bytes_paged_in: int = 0  # newly in the page cache inside tracked mappings (mincore)
    bytes_faulted: int = 0  # newly mapped into a process's page table (pagemap)
    bytes_perf: int = 0  # pages added to the page cache, seen by perf tracepoints
    calls: dict[str, int] = field(default_factory=dict)
    first_ns: int = 0
    last_ns: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form; keys end in their unit (``size_bytes``, ``read_bytes``, ...)."""
        d = dict(self.__dict__)
        out: dict[str, Any] = {"file_id": d.pop("file_id"), "path": d.pop("path")}
        out["size_bytes"] = d.pop("size")
        for k in ("read", "mapped", "paged_in", "faulted", "perf"):
            out[f"{k}_bytes"] = d.pop(f"bytes_{k}")
        out.update(d)
        return out


def file_totals(log: EventLog) -> list[FileTotals]:
    """Totals per file of ``log``, in file-id order (files without events included)."""
    ev = log.events
    out: list[FileTotals] = []
    for fid, entry in sorted(log.files.items()):
        t = FileTotals(fid, entry.path, entry.size)
        e = ev[ev["file_id"] == fid]
        if e.size:
            src = e["source"]
            op = e["op"]
            pre = e[src == Source.PRELOAD]
            reads = pre[np.isin(pre["op"], [int(o) for o in READ_OPS])]
            t.bytes_read = int(np.clip(reads["result"], 0, None).sum())
            t.bytes_mapped = int(pre["length"][pre["op"] == Op.MMAP].sum())
            mc = e[src == Source.MINCORE]
            t.bytes_paged_in = int(mc["length"][mc["op"] == Op.PAGE_IN].sum())
            t.bytes_faulted = int(mc["length"][mc["op"] == Op.PAGE_FAULT].sum())
            perf = e[(src == Source.PERF) & (op == Op.PAGE_IN)]
            t.bytes_perf = int(perf["length"].sum())
            names, counts = np.unique(pre["op"], return_counts=True)
            t.calls = {Op(int(n)).name.lower(): int(c) for n, c in zip(names, counts, strict=True)}
            t.first_ns = int(e["t_start_ns"].min())
            t.last_ns = int((e["t_start_ns"] + e["duration_ns"]).max())
        out.append(t)
    return out


def format_table(totals: list[FileTotals]) -> str:
    """A readable table, one row per file."""
    head = ("file", "size", "read", "mmapped", "paged in", "faulted", "perf", "span", "calls")
    rows = [head]
    for t in totals:
        calls = " ".join(f"{k}={v}" for k, v in sorted(t.calls.items()))
        span = fmt_ns(t.last_ns - t.first_ns) if t.last_ns else "-"
        rows.append(
            (
                t.path,
                fmt_bytes(t.size),
                fmt_bytes(t.bytes_read),
                fmt_bytes(t.bytes_mapped),
                fmt_bytes(t.bytes_paged_in),
                fmt_bytes(t.bytes_faulted),
                fmt_bytes(t.bytes_perf),
                span,
                calls,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = []
    for r in rows:
        n = len(head) - 1
        cells = [r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i]) for i in range(n)]
        lines.append("  ".join([*cells, r[n]]))
    return "\n".join(lines)
