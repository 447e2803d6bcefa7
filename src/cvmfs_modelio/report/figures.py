"""The report's figures: one function per figure, results tables (and the fit) in, a Figure out.

Every function builds a ``matplotlib.figure.Figure`` of its own (no pyplot, no global state), so
the report, the tests and a notebook call the same code and get the same picture.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cvmfs_modelio.chunks.layouts import Layout
from cvmfs_modelio.stats.fit import DEFAULT_CONFIG, Config, CostModelFit
from cvmfs_modelio.stats.recommend import AVG_CANDIDATES, Recommendation, Scenario
from cvmfs_modelio.stats.results import VANTAGE_POINTS, Results

MiB = 1 << 20
COLOURS = {
    "syscall": "#1f77b4",
    "page-in": "#2ca02c",
    "fuse-read": "#ff7f0e",
    "fetch": "#d62728",
}


def _figure(w: float = 8.0, h: float = 4.5) -> Figure:
    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def heatmap_measurement(res: Results, model: str) -> str | None:
    """The measurement a model's heat map shows: a traced cold load if any, else a cold one,
    else (a store that recorded no cold access pattern) a warm one."""
    m = res.measurements
    m = m[(m["model"] == model) & m["ok"].astype(bool)]
    if m.empty or res.reads is None:
        return None
    with_reads = m[m["measurement_id"].isin(set(res.reads["measurement_id"]))]
    if with_reads.empty:
        return None
    cold = with_reads[with_reads["cache_state"] == "cold"]
    with_reads = cold if not cold.empty else with_reads
    traced = with_reads[with_reads["traced"].astype(bool)]
    pick = traced if not traced.empty else with_reads
    # prefer the most chunks: the picture of chunking at work
    pick = pick.sort_values(["chunks_total", "rtt_ns"], ascending=False)
    return str(pick.iloc[0]["measurement_id"])


def access_heatmap(
    res: Results,
    measurement_id: str,
    layout: Layout | None = None,
    tensors: Any = None,
    max_labels: int = 14,
) -> Figure:
    """File offset x time of one load, one colour per vantage point, chunks and tensors marked.

    Reads (syscalls, page-ins, FUSE reads) are vertical strokes covering their byte range at
    their start time; fetches are boxes from start to end over the chunk they brought.  The
    file shown is the model's largest (the weights).  ``layout``: its chunks (dashed lines);
    ``tensors``: a tensor map (``.tensors`` of TensorSpan) for names on the right.
    """
    assert res.reads is not None
    r = res.reads[res.reads["measurement_id"] == measurement_id]
    row = res.measurements[res.measurements["measurement_id"] == measurement_id].iloc[0]
    sizes = r.groupby("file")["offset_bytes"].max() + r.groupby("file")["length_bytes"].max()
    file = str(sizes.idxmax()) if len(sizes) else ""
    r = r[r["file"] == file]
    fig = _figure(9, 5.5)
    ax = fig.add_subplot()
    for src in VANTAGE_POINTS:
        s = r[r["source"] == src]
        if s.empty:
            continue
        t0 = s["t_ns"].to_numpy() / 1e6
        y0 = s["offset_bytes"].to_numpy() / MiB
        y1 = (s["offset_bytes"] + s["length_bytes"]).to_numpy() / MiB
        if src == "fetch":
            t1 = (s["t_ns"] + s["duration_ns"]).to_numpy() / 1e6
            for a, b, lo, hi in zip(t0, t1, y0, y1, strict=True):
                ax.add_patch(
                    Rectangle((a, lo), b - a, hi - lo, color=COLOURS[src], alpha=0.25, lw=0)
                )
            ax.plot([], [], color=COLOURS[src], lw=6, alpha=0.4, label=f"fetches ({len(s)})")
        else:
            segs = np.stack([np.column_stack([t0, y0]), np.column_stack([t0, y1])], axis=1)
            ax.add_collection(LineCollection(list(segs), colors=COLOURS[src], linewidths=1.5))
            ax.plot([], [], color=COLOURS[src], lw=2, label=f"{src} ({len(s)})")
    if layout is not None:
        for off in layout.offsets[1:].tolist():
            ax.axhline(off / MiB, color="0.5", lw=0.6, ls="--")
        ax.plot([], [], color="0.5", lw=0.6, ls="--", label=f"chunk boundaries ({layout.n_chunks})")
    ax.autoscale()
    if tensors is not None:
        # The tensor map names files by absolute path, the reads by the path the program used.
        spans = [t for t in tensors.tensors if os.path.basename(t.file) == os.path.basename(file)]
        spans = sorted(spans, key=lambda t: -t.length_bytes)[:max_labels]
        ax2 = ax.twinx()
        ax2.set_ylim(ax.get_ylim())
        ax2.set_yticks([(t.offset_bytes + t.length_bytes / 2) / MiB for t in spans])
        ax2.set_yticklabels([t.name for t in spans], fontsize=7)
        ax2.set_ylabel("largest tensors")
    ax.set_xlabel("time since session start (ms)")
    ax.set_ylabel(f"offset in {file} (MiB)")
    ax.set_title(
        f"{row['model']}: {row['chunk_label']}, RTT {row['rtt_ns'] / 1e6:g} ms, "
        f"{row['cache_state']}" + (" (traced)" if bool(row.get("traced", False)) else "")
    )
    ax.legend(loc="upper left", fontsize=8)
    return fig


def fetched_vs_requested(res: Results) -> Figure:
    """Per model and configuration: bytes the program requested against bytes fetched (cold)."""
    m = res.measurements
    m = m[(m["cache_state"] == "cold") & m["ok"].astype(bool) & ~m["traced"].astype(bool)]
    g = (
        m.groupby(["model", "chunk_label"])[["bytes_requested", "bytes_fetched"]]
        .median()
        .reset_index()
        if "bytes_requested" in m.columns
        else m.groupby(["model", "chunk_label"])[["bytes_fetched"]].median().reset_index()
    )
    fig = _figure(10, 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(g))
    if "bytes_requested" in g.columns:
        ax.bar(x - 0.2, g["bytes_requested"] / MiB, 0.4, label="requested by the program")
    ax.bar(x + 0.2, g["bytes_fetched"] / MiB, 0.4, label="fetched (compressed, on the wire)")
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{a}\n{b}" for a, b in zip(g["model"], g["chunk_label"], strict=True)],
        fontsize=6,
        rotation=90,
    )
    ax.set_ylabel("MiB (median of cold loads)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Fetched against requested bytes, cold loads")
    return fig


def latency_cdf(res: Results) -> Figure:
    """CDF of per-fetch durations of data objects, one curve per (RTT, bandwidth)."""
    f = res.fetches_with_cells()
    f = f[f["kind"].isin(["chunk", "whole"])]
    fig = _figure()
    ax = fig.add_subplot()
    for key, g in f.groupby(["rtt_ns", "bandwidth_bytes_per_s"]):
        rtt, bw = (float(v) for v in key)  # type: ignore[arg-type]
        d = np.sort(g["duration_ns"].to_numpy() / 1e6)
        bwl = f"{bw / MiB:g} MiB/s" if bw else "unlimited"
        ax.step(
            d,
            np.arange(1, len(d) + 1) / len(d),
            where="post",
            label=f"RTT {rtt / 1e6:g} ms, {bwl} ({len(d)})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("fetch duration (ms)")
    ax.set_ylabel("fraction of fetches")
    ax.set_title("Per-object fetch latency (cmio-simfs event log)")
    ax.legend(fontsize=8)
    return fig


def sweep_curves(fit: CostModelFit, rec: Recommendation) -> Figure:
    """Predicted cold load relative to the defaults against avg chunk size, per family, with
    the bootstrap 95% band; unchunked dashed; measured cells of the scenario as points."""
    sc = rec.scenario
    fams = [a.family for a in rec.families]
    fig = _figure(5 * len(fams), 4.5)
    axes = fig.subplots(1, len(fams), squeeze=False)[0]
    boot = fit.bootstrap[:: max(1, len(fit.bootstrap) // 60)]
    from cvmfs_modelio.stats.costmodel import CostParams

    for ax, fam in zip(axes, fams, strict=True):
        profs = [p for p in fit.profiles.values() if p.family == fam]
        xs = np.array(AVG_CANDIDATES) / MiB
        cfgs = [Config.xor32(a // 2, a, 2 * a) for a in AVG_CANDIDATES]

        def rel(cfg: Config, params: CostParams | None, profs: list[Any] = profs) -> float:
            vals = []
            for p in profs:
                d = fit.predict_ns(
                    p.model, DEFAULT_CONFIG, sc.rtt_ns, sc.bandwidth, sc.prefetch, params=params
                )
                vals.append(
                    fit.predict_ns(
                        p.model, cfg, sc.rtt_ns, sc.bandwidth, sc.prefetch, params=params
                    )
                    / d
                )
            return float(np.mean(vals))

        y = [rel(c, None) for c in cfgs]
        band = np.array([[rel(c, CostParams.from_vector(b)) for c in cfgs] for b in boot])
        if len(band):
            lo, hi = np.percentile(band, [2.5, 97.5], axis=0)
            ax.fill_between(xs, lo, hi, alpha=0.25, label="95% band (bootstrap)")
        ax.plot(xs, y, "o-", label="predicted, xor32 avg/2:avg:2avg")
        ax.axhline(rel(Config(False), None), color="k", ls="--", lw=1, label="unchunked")
        cells = fit.cells[
            (fit.cells["model_family"] == fam)
            & (fit.cells["rtt_ns"] == sc.rtt_ns)
            & (fit.cells["bandwidth_bytes_per_s"] == sc.bandwidth)
            & (fit.cells["prefetch_depth"] == 0)
        ]
        if not cells.empty:
            pts = []
            for _k, g in cells.groupby("model"):
                dflt = g[g["config"] == DEFAULT_CONFIG.label]
                if dflt.empty:
                    continue
                for _i, c in g.iterrows():
                    if bool(c["chunking"]):
                        pts.append(
                            (
                                c["chunk_avg_bytes"] / MiB,
                                c["measured_ns"] / dflt["measured_ns"].iloc[0],
                            )
                        )
            if pts:
                px, py = zip(*pts, strict=True)
                ax.plot(px, py, "x", color="C3", label="measured (per model)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("CVMFS_AVG_CHUNK_SIZE (MiB)")
        ax.set_ylabel("cold time to first inference / defaults")
        ax.set_title(f"{fam}: {sc.label()}", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def predicted_vs_measured(fit: CostModelFit, validation: pd.DataFrame | None = None) -> Figure:
    """Measured against predicted cold time to first inference: in-sample, leave-one-model-out,
    and the closed-loop validation cells; the diagonal with a +-10% band."""
    fig = _figure(6, 6)
    ax = fig.add_subplot()
    c = fit.cells
    ax.scatter(c["measured_ns"] / 1e9, c["predicted_ns"] / 1e9, s=12, label="fitted cells")
    cv = c[np.isfinite(c["cv_predicted_ns"])]
    ax.scatter(
        cv["measured_ns"] / 1e9,
        cv["cv_predicted_ns"] / 1e9,
        s=12,
        marker="+",
        label="leave-one-model-out",
    )
    if validation is not None and not validation.empty:
        ax.scatter(
            validation["measured_ns"] / 1e9,
            validation["predicted_ns"] / 1e9,
            s=40,
            marker="*",
            color="C3",
            label="validation (unseen models and RTTs)",
        )
    lo = max(1e-3, float(c["measured_ns"].min() / 1e9) * 0.7)
    hi = float(c["measured_ns"].max() / 1e9) * 1.4
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.8", alpha=0.5, label="±10%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured (s)")
    ax.set_ylabel("predicted (s)")
    ax.set_title(f"Cold time to first inference ({fit.client_profile} client)")
    ax.legend(fontsize=8)
    return fig


def prefetch_effect(fit: CostModelFit, rec: Recommendation) -> Figure:
    """Predicted cold load against client prefetch depth (defaults and small chunks, per
    family), with the measured prefetch cells."""
    fams = [a for a in rec.families if a.prefetch]
    fig = _figure(5 * max(1, len(fams)), 4.5)
    axes = fig.subplots(1, max(1, len(fams)), squeeze=False)[0]
    for ax, fa in zip(axes, fams, strict=False):
        d = [p["depth"] for p in fa.prefetch]
        ax.plot(
            d,
            [p["default_ns"] / 1e9 for p in fa.prefetch],
            "o-",
            label=f"defaults {DEFAULT_CONFIG.label}",
        )
        ax.plot(
            d,
            [p["small_ns"] / 1e9 for p in fa.prefetch],
            "s-",
            label=f"{fa.prefetch[0]['small_chunks']}",
        )
        ax.axhline(
            fa.prefetch[0]["unchunked_ns"] / 1e9, color="k", ls="--", lw=1, label="unchunked"
        )
        ax.set_xlabel("client prefetch depth (chunks)")
        ax.set_ylabel("predicted cold load, family mean (s)")
        ax.set_title(f"{fa.family}: {rec.scenario.label()}", fontsize=9)
        ax.set_xscale("symlog", linthresh=1)
        ax.legend(fontsize=7)
    return fig


def rtt_effect(fit: CostModelFit, rec: Recommendation) -> Figure:
    """Predicted cold load (family mean) against RTT for unchunked, defaults and the best."""
    from cvmfs_modelio.stats.recommend import RTT_GRID_NS

    fams = rec.families
    fig = _figure(5 * len(fams), 4.5)
    axes = fig.subplots(1, len(fams), squeeze=False)[0]
    sc = rec.scenario
    for ax, fa in zip(axes, fams, strict=True):
        profs = [p for p in fit.profiles.values() if p.family == fa.family]
        configs = {
            "unchunked": Config(False),
            DEFAULT_CONFIG.label: DEFAULT_CONFIG,
            "512 KiB/1 MiB/2 MiB": Config.xor32(MiB // 2, MiB, 2 * MiB),
        }
        for lab, cfg in configs.items():
            ys = [
                float(
                    np.mean(
                        [fit.predict_ns(p.model, cfg, r, sc.bandwidth, sc.prefetch) for p in profs]
                    )
                )
                / 1e9
                for r in RTT_GRID_NS
            ]
            ax.plot(np.array(RTT_GRID_NS) / 1e6, ys, "o-", label=lab)
        for r, lo, hi in fa.break_even_rtt_ns:
            ax.axvline(r / 1e6, color="C3", ls=":", label=f"break-even {lo} / {hi}")
        ax.set_xscale("log")
        ax.set_xlabel("RTT (ms)")
        ax.set_ylabel("predicted cold load, family mean (s)")
        bw = Scenario(0, sc.bandwidth).label().split(", ", 1)[1]
        ax.set_title(f"{fa.family}: {bw}", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def fetch_residuals(fit: CostModelFit) -> Figure:
    """Per-fetch residuals of the cost fit against the fitted duration."""
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    ax.scatter(fit.fetch_fitted_ns / 1e6, fit.fetch_residuals_ns / 1e6, s=4, alpha=0.4)
    ax.axhline(0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("fitted fetch duration (ms)")
    ax.set_ylabel("measured - fitted (ms)")
    ax.set_title(f"Per-fetch cost fit: {fit.n_fetches} isolated fetches, R² {fit.fetch_r2:.2f}")
    return fig
