"""The table ``cvmfs-modelio run`` prints: medians per condition, cold/warm/hot side by side.

Computed from the results store alone (every figure is a query over it).  Only rows that
are ok count; a cold median uses verified-cold rows only, and the table says how many of
the cold rows were verified.
"""

from __future__ import annotations

from typing import Any

from cvmfs_modelio.campaign.spec import CACHE_STATES
from cvmfs_modelio.core import units

HEADER = [
    "model",
    "chunks",
    "rtt",
    "bandwidth",
    "prefetch",
    "loader",
    *[f"{s} ttfi" for s in CACHE_STATES],
    "cold objects",
    "cold fetched",
    "verified",
    "failed",
]

_GROUP = ["model", "chunk_label", "rtt_ns", "bandwidth_bytes_per_s", "prefetch_depth", "loader"]


def _median(series: Any) -> float | None:
    return None if series.empty else float(series.median())


def summary_rows(df: Any) -> list[list[str]]:
    """One row per condition (``df``: ``ResultsStore.measurements()``)."""
    rows: list[list[str]] = []
    if df.empty:
        return rows
    for key, g in df.groupby(_GROUP, sort=True):
        model, chunks, rtt, bw, prefetch, loader = key
        ok = g[g["ok"]]
        cold = ok[(ok["cache_state"] == "cold") & ok["cold_verified"]]
        cells = []
        for state in CACHE_STATES:
            sel = cold if state == "cold" else ok[ok["cache_state"] == state]
            m = _median(sel["time_to_first_inference_ns"])
            cells.append("-" if m is None else units.fmt_ns(m))
        all_cold = ok[ok["cache_state"] == "cold"]
        objs = _median(cold["objects_fetched"])
        nbytes = _median(cold["bytes_fetched"])
        rows.append(
            [
                str(model),
                str(chunks),
                "real" if rtt < 0 else f"{rtt / 1e6:g} ms",
                "real" if bw < 0 else ("unlimited" if bw == 0 else units.fmt_rate(bw)),
                str(prefetch),
                str(loader),
                *cells,
                "-" if objs is None else f"{objs:g}",
                "-" if nbytes is None else units.fmt_bytes(nbytes),
                f"{len(cold)}/{len(all_cold)} cold",
                str(int((~g["ok"]).sum())),
            ]
        )
    return rows
