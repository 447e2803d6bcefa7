"""Tables for people: a load's phases, and loaders side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns

PHASE_HEADER = [
    "phase",
    "wall",
    "read()",
    "mmap touched",
    "paged in",
    "I/O wait",
    "FUSE req (reads)",
    "fetched",
    "tensors (first)",
    "top tensors",
]


def _tensor_cell(top: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['name']} {fmt_bytes(t['bytes'])}" for t in top)


def format_phases(rows: Sequence[dict[str, Any]]) -> str:
    """The phase table of :meth:`LoadResult.medians` (sub-phases indented)."""
    body = []
    for r in rows:
        fetched = f"{r['fetches']} ({fmt_bytes(r['fetch_bytes'])})" if r["fetches"] else "-"
        body.append(
            [
                "  " * int(r["depth"]) + str(r["name"]),
                fmt_ns(r["wall_ns"]),
                fmt_bytes(r["read_bytes"]),
                fmt_bytes(r["mmap_touched_bytes"]),
                fmt_bytes(r["paged_in_bytes"]),
                fmt_ns(r["io_wait_ns"]),
                f"{r['fuse_requests']} ({r.get('fuse_reads', 0)})",
                fetched,
                f"{r['tensors_touched']} ({r['tensors_first_touched']})",
                _tensor_cell(r.get("top_tensors") or []),
            ]
        )
    return format_table(PHASE_HEADER, body)


def summary_lines(result: Any) -> list[str]:
    """A few lines under the table: time to first inference, state, kernel, fetches, notes."""
    out = []
    ttfi = result.time_to_first_inference_ns()
    reps = len(result.runs)
    where = result.location if result.mount is None else f"{result.location} CVMFS ({result.mount})"
    state = result.options["state"]
    out.append(
        f"{result.model}: {result.options['loader']}, {state}, {where}, medians of {reps} "
        f"run(s); time to first inference {fmt_ns(ttfi) if ttfi else '-'}"
    )
    r0 = result.runs[0]
    if r0.fetch:
        f = r0.fetch
        conc = f["mean_concurrency"]
        out.append(
            f"chunk downloads: {f['chunks']} ({fmt_bytes(f['bytes'])}), busy {fmt_ns(f['busy_ns'])}"
            f", mean concurrency {conc if conc is not None else '-'}"
        )
    if r0.counters_delta:
        d = r0.counters_delta
        out.append(
            "client counters: "
            f"{d.get('fetch.n_downloads', 0)} downloads, "
            f"{fmt_bytes(d.get('download.sz_transferred_bytes', 0))} transferred, "
            f"{d.get('cvmfs.n_fs_open', 0)} opens, {d.get('cvmfs.n_fs_read', 0)} reads"
        )
    out.append(f"kernel tracepoints: {r0.kernel}")
    notes = list(dict.fromkeys([*result.notes, *(n for r in result.runs for n in r.notes)]))
    out.extend(f"note: {n}" for n in notes)
    return out


LOADER_HEADER = [
    "loader",
    "chunks",
    "state",
    "time to 1st inf",
    "weights/session",
    "fetch busy",
    "fetch share",
    "concurrency",
    "read()",
    "mmap touched",
]


def format_loader_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Loaders side by side: rows with ``loader``, ``config``, ``state``, ``ttfi_ns``,
    ``load_ns``, ``fetch_busy_ns``, ``mean_concurrency``, ``read_bytes``, ``mmap_bytes``."""
    body = []
    for r in rows:
        share = (
            f"{100.0 * r['fetch_busy_ns'] / r['ttfi_ns']:.0f}%"
            if r.get("fetch_busy_ns") and r.get("ttfi_ns")
            else "-"
        )
        conc = r.get("mean_concurrency")
        body.append(
            [
                str(r["loader"]),
                str(r.get("config", "local")),
                str(r["state"]),
                fmt_ns(r["ttfi_ns"]) if r.get("ttfi_ns") else "-",
                fmt_ns(r["load_ns"]) if r.get("load_ns") else "-",
                fmt_ns(r["fetch_busy_ns"]) if r.get("fetch_busy_ns") else "-",
                share,
                f"{conc:.2f}" if conc else "-",
                fmt_bytes(r.get("read_bytes", 0)),
                fmt_bytes(r.get("mmap_bytes", 0)),
            ]
        )
    return format_table(LOADER_HEADER, body)
