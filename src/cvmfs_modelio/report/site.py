"""The report's "Site" section: herd results (``herd --json``, ``bench/bench_herd.py``).

Everything here is read from herd result files; the text states only what their rows show
(and the squid settings the herd ran with, which are facts of the setup, not measurements).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError

SQUID_DEFAULT_MAX_OBJECT = 4 * 1024 * 1024  # squid's maximum_object_size when not set

COLUMNS = [
    "model",
    "model_bytes",
    "clients",
    "chunk_label",
    "proxy",
    "collapsed_forwarding",
    "squid_state",
    "ttfi_p50_ns",
    "ttfi_p90_ns",
    "ttfi_max_ns",
    "cpu_per_client_p50_ns",
    "stratum_requests",
    "stratum_bytes",
    "stratum_peak_concurrent_requests",
    "proxy_requests",
    "proxy_hits",
    "objects_total",
    "object_bytes_total",
]


def load_herd(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Herd rows of every file (schemas ``cvmfs-modelio.herd`` and ``cvmfs-modelio.bench.herd``)."""
    recs: list[dict[str, Any]] = []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text(encoding="utf-8"))
            name = doc["schema"]["name"]
        except OSError as e:
            raise UsageError(f"--herd {p}: cannot read: {e.strerror}") from None
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"--herd {p}: not a herd result (no schema)") from None
        if name == "cvmfs-modelio.herd":
            par = doc["params"]
            for r in doc["rows"]:
                recs.append(
                    {
                        **r,
                        "model": doc["model"]["name"],
                        "model_bytes": doc["model"]["bytes"],
                        "proxy": par["proxy"],
                        "collapsed_forwarding": par["collapsed_forwarding"],
                        "squid_state": par["squid_state"],
                    }
                )
        elif name == "cvmfs-modelio.bench.herd":
            for r in doc["runs"]:
                label = str(r.get("variant", ""))
                recs.append(
                    {
                        "proxy": "squid",
                        "collapsed_forwarding": "collapsed off" not in label,
                        "squid_state": "warm" if "warm" in label else "cold",
                        **r,
                    }
                )
        else:
            raise UsageError(f"--herd {p}: schema {name!r} is not a herd result")
    if not recs:
        raise UsageError(f"--herd {', '.join(map(str, paths))}: no herd rows")
    df = pd.DataFrame(recs)
    for c in COLUMNS:
        if c not in df:
            df[c] = -1
    return df[COLUMNS].copy()


def _variant(r: pd.Series) -> str:
    if not r["proxy"]:
        return "no proxy"
    cf = "on" if r["collapsed_forwarding"] else "off"
    return f"squid {r['squid_state']}, collapsed {cf}"


def herd_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _i, r in df.sort_values(["model", "chunk_label", "clients"]).iterrows():
        n_obj = int(r["objects_total"])
        rows.append(
            {
                "model": r["model"],
                "chunks": r["chunk_label"],
                "clients": int(r["clients"]),
                "squid": _variant(r),
                "ttfi p50": units.fmt_ns(int(r["ttfi_p50_ns"])),
                "ttfi p90": units.fmt_ns(int(r["ttfi_p90_ns"])),
                "ttfi max": units.fmt_ns(int(r["ttfi_max_ns"])),
                "cpu/client": units.fmt_ns(int(r["cpu_per_client_p50_ns"])),
                "stratum serves/object": f"{int(r['stratum_requests']) / n_obj:.2f}"
                if n_obj > 0
                else "-",
                "peak stratum conc.": int(r["stratum_peak_concurrent_requests"]),
                "squid hits": f"{int(r['proxy_hits'])}/{int(r['proxy_requests'])}"
                if int(r["proxy_requests"]) >= 0
                else "-",
            }
        )
    return pd.DataFrame(rows)


def _cold_on(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["proxy"] == "squid") & (df["squid_state"] == "cold") & df["collapsed_forwarding"]]


def herd_figure(df: pd.DataFrame) -> Figure:
    """TTFI p50 and stratum bytes per model byte against N (cold squid, collapsing on)."""
    from cvmfs_modelio.report.figures import _figure

    fig = _figure(10.0, 4.2)
    a1, a2 = fig.subplots(1, 2)
    d = _cold_on(df)
    for (model, chunks), g in d.groupby(["model", "chunk_label"]):
        g = g.sort_values("clients")
        a1.plot(g["clients"], g["ttfi_p50_ns"] / 1e9, marker="o", label=f"{model} [{chunks}]")
        a2.plot(
            g["clients"],
            g["stratum_bytes"] / g["model_bytes"].clip(lower=1),
            marker="o",
            label=f"{model} [{chunks}]",
        )
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xlabel("clients starting at once")
        a.grid(alpha=0.3)
    a1.set_ylabel("time to first inference, p50 (s)")
    a2.set_ylabel("stratum bytes / model bytes")
    a1.legend(fontsize=7)
    return fig


def site_findings(df: pd.DataFrame) -> list[str]:
    """Statements the rows support (each names the rows it comes from)."""
    out: list[str] = []
    whole = df[df["chunk_label"] == "unchunked"]
    chunked = df[df["chunk_label"] != "unchunked"]
    if not whole.empty:
        big = int(whole["model_bytes"].max())
        out.append(
            f"**maximum_object_size vs chunk size.** Unchunked, an object is a whole file (up "
            f"to {units.fmt_bytes(big)} here), above squid's default maximum_object_size "
            f"({units.fmt_bytes(SQUID_DEFAULT_MAX_OBJECT)}): a default squid never caches it "
            "and every client of a herd fetches it from the stratum. Chunked, no object is "
            "larger than the maximum chunk size (16 MiB for CVMFS's 4/8/16 MiB), so a "
            "maximum_object_size at least the maximum chunk size lets the squid cache all of "
            "a chunked model. The herds here ran with twice the largest object."
        )
    on = _cold_on(df)
    off = df[(df["proxy"] == "squid") & (df["squid_state"] == "cold") & ~df["collapsed_forwarding"]]
    for _i, r in off.iterrows():
        m = on[
            (on["model"] == r["model"])
            & (on["clients"] == r["clients"])
            & (on["chunk_label"] == r["chunk_label"])
        ]
        if m.empty or r["objects_total"] <= 0:
            continue
        o = m.iloc[0]
        out.append(
            f"**collapsed_forwarding.** {r['model']} [{r['chunk_label']}], "
            f"{int(r['clients'])} cold clients: the stratum served "
            f"{r['stratum_requests'] / r['objects_total']:.2f} requests per object with it off, "
            f"{o['stratum_requests'] / o['objects_total']:.2f} with it on (peak concurrent "
            f"stratum requests {int(r['stratum_peak_concurrent_requests'])} vs "
            f"{int(o['stratum_peak_concurrent_requests'])}; p50 time to first inference "
            f"{units.fmt_ns(int(r['ttfi_p50_ns']))} vs {units.fmt_ns(int(o['ttfi_p50_ns']))})."
        )
    warm = df[(df["squid_state"] == "warm")]
    for _i, r in warm.iterrows():
        out.append(
            f"**warm squid.** {r['model']} [{r['chunk_label']}], {int(r['clients'])} clients: "
            f"the stratum served {int(r['stratum_requests'])} data objects; the squid answered "
            f"{int(r['proxy_hits'])} of {int(r['proxy_requests'])} requests from its cache."
        )
    if not chunked.empty and not whole.empty:
        for model, g in on.groupby("model"):
            ns = sorted(int(n) for n in g["clients"].unique())
            parts = []
            for n in (ns[0], ns[-1]) if len(ns) > 1 else ns[:1]:
                at = g[g["clients"] == n].sort_values("chunk_label")
                times = "; ".join(
                    f"{r['chunk_label']} {units.fmt_ns(int(r['ttfi_p50_ns']))}"
                    for _i, r in at.iterrows()
                )
                parts.append(f"{n} clients: {times}")
            once = bool((g["stratum_requests"] == g["objects_total"]).all())
            out.append(
                f"**chunk size with many clients.** {model}, cold squid with collapsing on, "
                f"p50 time to first inference at "
                + " | ".join(parts)
                + "."
                + (
                    " In every one of these herds the stratum served each object exactly "
                    "once: behind one proxy the WAN cost does not grow with the number of "
                    "clients, so what changes the ranking of chunk sizes as N grows is on "
                    "the site's side of the WAN."
                    if once
                    else ""
                )
            )
    out.append(
        "**memory vs disk cache.** The herd's squid has cache_mem 256 MB and "
        "maximum_object_size_in_memory 64 MiB: objects above that live in its disk cache only. "
        "Chunks of 4/8/16 MiB fit both; a site serving large unchunked files needs a disk "
        "cache (cache_dir) at least the size of the models in use."
    )
    return out
