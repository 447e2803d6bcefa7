"""A herd's table and its JSON payload (schema ``cvmfs-modelio.herd``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns
from cvmfs_modelio.herd.run import HerdReport, HerdRow

SCHEMA = "herd"  # write_json names it cvmfs-modelio.herd
SCHEMA_VERSION = 1

HEADER = [
    "chunks",
    "clients",
    "ok",
    "ttfi p50",
    "ttfi p90",
    "ttfi max",
    "cpu/client",
    "stratum req",
    "stratum bytes",
    "serves/object",
    "peak stratum conc.",
    "squid req",
    "squid hits",
    "objects",
]


def table_rows(rows: list[HerdRow]) -> list[list[str]]:
    out = []
    for r in rows:
        squid = r.proxy_requests >= 0
        out.append(
            [
                r.chunk_label,
                str(r.clients),
                str(r.clients_ok),
                fmt_ns(r.ttfi_p50_ns) if r.clients_ok else "-",
                fmt_ns(r.ttfi_p90_ns) if r.clients_ok else "-",
                fmt_ns(r.ttfi_max_ns) if r.clients_ok else "-",
                fmt_ns(r.cpu_per_client_p50_ns) if r.clients_ok else "-",
                str(r.stratum_requests),
                fmt_bytes(r.stratum_bytes),
                f"{r.stratum_requests / r.objects_total:.2f}" if r.objects_total else "-",
                str(r.stratum_peak_concurrent_requests),
                str(r.proxy_requests) if squid else "-",
                f"{r.proxy_hits} ({r.proxy_hit_ratio:.0%})" if squid else "-",
                f"{r.objects_total} ({fmt_bytes(r.object_bytes_total)})",
            ]
        )
    return out


def format_report(rep: HerdReport) -> str:
    p, m = rep.params, rep.memory
    proxy = (
        f"squid (collapsed_forwarding {'on' if p.collapsed_forwarding else 'off'}, {p.squid_state})"
        if p.proxy
        else "no proxy"
    )
    lines = [
        f"herd: {p.clients} clients load {rep.model.name} ({fmt_bytes(rep.model_bytes)}) "
        f"at once through {proxy}; stratum behind {p.rtt_ms:g} ms RTT, "
        f"{fmt_bytes(p.bandwidth) + '/s' if p.bandwidth else 'unlimited'}",
        format_table(HEADER, table_rows(rep.rows)),
        f"per client: {fmt_bytes(m.per_client_bytes)} (ORT load {fmt_bytes(m.load_rss_bytes)} + "
        f"cmio-simfs {fmt_bytes(m.client_hwm_bytes)}, measured); "
        f"{fmt_bytes(m.available_bytes)} available holds at most {m.max_clients} clients",
        f"cpu/client: the load's CPU time (median); {os.cpu_count()} cores here, so "
        "N loads need at least N x cpu/client / cores of wall time whatever the network",
        "load average (1 min) before/after: "
        + ", ".join(
            f"{r.load_average_1m_before:.1f}/{r.load_average_1m_after:.1f}" for r in rep.rows
        ),
    ]
    for r in rep.rows:
        for e in r.errors:
            lines.append(f"[{r.chunk_label}] failed clients: {e}")
    return "\n".join(lines)


def payload(rep: HerdReport) -> dict[str, Any]:
    p = rep.params
    return {
        "model": {
            "name": rep.model.name,
            "path": str(rep.model.onnx),
            "files": [str(f) for f in rep.model.files],
            "bytes": rep.model_bytes,
        },
        "params": {
            "clients": p.clients,
            "proxy": p.proxy,
            "collapsed_forwarding": p.collapsed_forwarding if p.proxy else None,
            "squid_state": p.squid_state,
            "rtt_ns": round(p.rtt_ms * 1e6),
            "bandwidth_bytes_per_s": p.bandwidth,
            "parallel": p.parallel,
            "client_profile": p.client_profile,
            "squid_max_object_bytes": p.squid_max_object,
            "configs": [c.label for c in p.configs],
        },
        "memory": {
            "load_rss_bytes": rep.memory.load_rss_bytes,
            "client_hwm_bytes": rep.memory.client_hwm_bytes,
            "per_client_bytes": rep.memory.per_client_bytes,
            "available_bytes": rep.memory.available_bytes,
            "max_clients": rep.memory.max_clients,
        },
        "rows": [dataclasses.asdict(r) for r in rep.rows],
    }
