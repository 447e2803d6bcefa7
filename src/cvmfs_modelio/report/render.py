"""The report directory: ``report.md`` + ``figures/*.png``, one self-contained ``report.html``
(every figure inlined as a ``data:`` URI, no external resource) and ``best-practices.md``.

Everything is derived from the results store and the one fit; nothing is measured here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cvmfs_modelio.core import units
from cvmfs_modelio.core.atomicio import write_atomic_bytes
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.report import figures
from cvmfs_modelio.stats.fit import CALIBRATED_PROFILE, DEFAULT_CONFIG, Config, CostModelFit
from cvmfs_modelio.stats.realclient import RealClientFit
from cvmfs_modelio.stats.recommend import Recommendation, storage_bytes, version_series
from cvmfs_modelio.stats.results import Results
from cvmfs_modelio.stats.textout import format_recommendation, format_validation

Progress = Callable[[str], None]


@dataclass
class Section:
    """One part of the report: a title, paragraphs, figures (name -> Figure), tables."""

    title: str
    anchor: str
    text: list[str] = field(default_factory=list)
    pre: str | None = None
    figures: list[tuple[str, str, Figure]] = field(default_factory=list)  # (name, caption, fig)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)


@dataclass
class ReportInputs:
    """What a report is made from."""

    results: Results
    fit: CostModelFit
    rec: Recommendation
    validation: Any = None  # stats.validate.Validation
    real_client: RealClientFit | None = None
    herd: pd.DataFrame | None = None  # report.site.load_herd rows: the "Site" section


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def load_summary(res: Results) -> str:
    """Machine load during the measurements (from each mount's environment record)."""
    loads = []
    for text in res.measurements["environment_json"].dropna().unique():
        try:
            v = json.loads(text).get("load_average_1m")
        except (ValueError, AttributeError):
            continue
        if isinstance(v, (int, float)):
            loads.append(float(v))
    if not loads:
        return "machine load not recorded"
    return (
        f"1-minute load average at the start of each mount: median {np.median(loads):.1f}, "
        f"range {min(loads):.1f}-{max(loads):.1f} (2 cores)"
    )


def build_sections(inp: ReportInputs, say: Progress) -> list[Section]:
    res, fit, rec = inp.results, inp.fit, inp.rec
    profile_line = f"All numbers are for the **{fit.client_profile}** client profile." + (
        ""
        if fit.client_profile == CALIBRATED_PROFILE
        else f" This is *not* the calibrated {CALIBRATED_PROFILE} profile (the emulated "
        "client calibrated to the real cvmfs2 2.12); the real client's extra per-object "
        "cost is given under 'Real client' below."
    )
    out: list[Section] = []
    s = Section("Recommendation", "recommendation")
    s.text = [
        profile_line,
        f"Results store `{res.path}` ({len(res.measurements)} measurements, "
        f"{len(res.fetches)} fetches); {load_summary(res)}.",
    ]
    s.pre = format_recommendation(fit, rec)
    out.append(s)

    say("figures: sweeps, predictions, prefetch, RTT")
    s = Section("Chunk size sweeps", "sweeps")
    s.figures.append(
        (
            "sweep",
            "Predicted cold load against the average chunk size, per "
            "family, relative to the defaults, with the bootstrap band and the "
            "measured cells",
            figures.sweep_curves(fit, rec),
        )
    )
    s.figures.append(
        (
            "rtt",
            "Predicted cold load against RTT (break-even where curves cross)",
            figures.rtt_effect(fit, rec),
        )
    )
    out.append(s)

    s = Section("Client-side prefetch", "prefetch")
    s.figures.append(
        (
            "prefetch",
            "Predicted cold load against the client's prefetch depth",
            figures.prefetch_effect(fit, rec),
        )
    )
    pf = fit.cells[fit.cells["prefetch_depth"] > 0]
    if not pf.empty:
        s.tables.append(("Measured prefetch cells against the model", _cells_table(pf)))
    out.append(s)

    s = Section("Fit quality", "fit")
    s.pre = fit.summary()
    s.figures.append(
        (
            "predicted",
            "Measured against predicted cold time to first inference",
            figures.predicted_vs_measured(
                fit, inp.validation.cells if inp.validation is not None else None
            ),
        )
    )
    s.figures.append(("residuals", "Per-fetch residuals", figures.fetch_residuals(fit)))
    s.tables.append(("Cold cells, measured against predicted", _cells_table(fit.cells)))
    out.append(s)

    if inp.validation is not None:
        s = Section("Closed-loop validation", "validation")
        s.pre = format_validation(inp.validation)
        out.append(s)

    if inp.real_client is not None:
        rc = inp.real_client
        s = Section("Real client", "real-client")
        s.text = [
            rc.summary() + ".",
            "Where they differ: the emulated client's cost per object here is "
            f"{units.fmt_ns(fit.params['per_object_ns'].value)} + "
            f"{fit.params['rtt_factor'].value:.2f} RTT; the recorded real client pays "
            f"{rc.extra_per_object_ns / 1e6:+.2f} ms more per object and "
            f"{rc.rtt_factor['real']:.2f} RTT per object (emulated in that recording: "
            f"{rc.rtt_factor['emulated']:.2f}), so advice from an uncalibrated profile "
            "under-prices small chunks.",
        ]
        s.tables.append(
            ("Recorded cold loads, real against emulated", pd.DataFrame(rc.ratio_by_cell))
        )
        out.append(s)

    say("figures: latency, bytes")
    s = Section("Fetches", "fetches")
    s.figures.append(("latency", "Per-object fetch latency CDFs", figures.latency_cdf(res)))
    s.figures.append(
        ("bytes", "Fetched against requested bytes", figures.fetched_vs_requested(res))
    )
    out.append(s)

    say("figures: access heat maps")
    s = Section("Access heat maps", "heatmaps")
    from cvmfs_modelio.report.tensors import inspect_model

    for model in sorted(fit.profiles):
        mid = figures.heatmap_measurement(res, model)
        if mid is None:
            continue
        prof = fit.profiles[model]
        row = res.measurements[res.measurements["measurement_id"] == mid].iloc[0]
        cfg = (
            Config.xor32(
                int(row["chunk_min_bytes"]),
                int(row["chunk_avg_bytes"]),
                int(row["chunk_max_bytes"]),
            )
            if bool(row["chunking"])
            else Config(False)
        )
        lays = prof.layouts(cfg)
        biggest = int(np.argmax([lay.file_size for lay in lays]))
        tmap = inspect_model(prof.model_path)
        s.figures.append(
            (
                f"heatmap-{_slug(model)}",
                f"{model}: file offset against time",
                figures.access_heatmap(res, mid, lays[biggest], tmap),
            )
        )
    out.append(s)

    say("tables: storage, loaders")
    s = Section("Storage and updates", "storage")
    s.tables.append(
        ("Stored bytes per family and configuration (identical chunks once)", storage_table(fit))
    )
    out.append(s)
    s = Section("Loaders and KServe", "loaders")
    s.tables += loader_tables(res)
    if not s.tables:
        s.text.append(
            "This store has no rows of other loaders (only ONNX Runtime with defaults) and no "
            "KServe rows: the tables appear when the campaign measures them."
        )
    out.append(s)
    if inp.herd is not None:
        out.append(_site_section(inp.herd, say))
    return out


def _site_section(herd: pd.DataFrame, say: Progress) -> Section:
    from cvmfs_modelio.report import site

    say("site: herd curves")
    s = Section("Site", "site")
    s.text = [
        "Many clients starting the same model at once behind one squid (`cvmfs-modelio herd`; "
        "docs/scale.md). Times on this machine include N ONNX Runtime sessions sharing its "
        "cores (cpu/client); stratum and squid counts do not depend on that.",
        *site.site_findings(herd),
    ]
    s.figures.append(
        (
            "herd",
            "Time to first inference (p50) and stratum bytes per model byte against the "
            "number of clients (cold squid, collapsed forwarding on)",
            site.herd_figure(herd),
        )
    )
    s.tables.append(("Herds", site.herd_table(herd)))
    return s


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def _cells_table(c: pd.DataFrame) -> pd.DataFrame:
    t = pd.DataFrame(
        {
            "model": c["model"],
            "config": c["config"],
            "RTT (ms)": c["rtt_ns"] / 1e6,
            "bandwidth (MiB/s)": np.where(
                c["bandwidth_bytes_per_s"] > 0, c["bandwidth_bytes_per_s"] / (1 << 20), np.inf
            ),
            "prefetch": c["prefetch_depth"],
            "n": c["n"],
            "measured (ms)": (c["measured_ns"] / 1e6).round(1),
            "predicted (ms)": (c["predicted_ns"] / 1e6).round(1),
            "error (%)": (100 * (c["predicted_ns"] - c["measured_ns"]) / c["measured_ns"]).round(1),
        }
    )
    return t.reset_index(drop=True)


def storage_table(fit: CostModelFit) -> pd.DataFrame:
    """Stored (compressed, estimated) bytes per family and configuration, update costs."""
    configs = [
        Config(False),
        Config.xor32(1 << 20, 2 << 20, 4 << 20),
        DEFAULT_CONFIG,
        Config.xor32(16 << 20, 32 << 20, 64 << 20),
    ]
    rows = []
    fams: dict[str, list[Any]] = {}
    for p in fit.profiles.values():
        fams.setdefault(p.family, []).append(p)
    for fam, profs in sorted(fams.items()):
        series = version_series([p.model for p in profs])
        for c in configs:
            n_obj = sum(lay.n_chunks for p in profs for lay in p.layouts(c))
            rows.append(
                {
                    "family": fam,
                    "config": c.label,
                    "objects": n_obj,
                    "stored (MiB)": round(storage_bytes(profs, c) / (1 << 20), 2),
                    "version series": len(series),
                }
            )
    return pd.DataFrame(rows)


def loader_tables(res: Results) -> list[tuple[str, pd.DataFrame]]:
    """Cold time per model and loader, and KServe rows, when the store has them."""
    m = res.measurements
    m = m[m["ok"].astype(bool) & (m["cache_state"] == "cold")]
    out = []
    if m["loader"].nunique() > 1:
        t = (m.groupby(["model", "loader"])["time_to_first_inference_ns"].median() / 1e6).round(1)
        out.append(("Cold time to first inference (ms) per loader", t.unstack().reset_index()))
    ks = m[
        m["loader"].str.contains("kserve")
        | m.get("executor", pd.Series("", index=m.index)).astype(str).str.contains("kserve")
    ]
    if not ks.empty:
        t = (ks.groupby(["model", "loader"])["time_to_first_inference_ns"].median() / 1e6).round(1)
        out.append(("KServe: cold time to ready (ms)", t.reset_index()))
    return out


# ------------------------------------------------------------------ writing


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}"
    "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}"
    "nav a{margin-right:1em}"
)


def write_report(
    inp: ReportInputs, out_dir: str | os.PathLike[str], progress: Progress | None = None
) -> dict[str, Path]:
    """Write the report into ``out_dir``; returns the paths written (html, md, best practices)."""
    from cvmfs_modelio.report.bestpractices import best_practices

    say = progress or (lambda _m: None)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    sections = build_sections(inp, say)
    say("writing")
    pngs: dict[str, bytes] = {}
    for sec in sections:
        for name, _cap, fig in sec.figures:
            pngs[name] = _png(fig)
            write_atomic_bytes(out / "figures" / f"{name}.png", pngs[name], fsync=False)
    title = f"cvmfs-modelio report: {inp.results.path.name} ({inp.fit.client_profile} client)"
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>", "<nav>"]
    body += [f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections]
    body.append("</nav>")
    for sec in sections:
        md += [f"## {sec.title}", ""]
        body.append(f'<h2 id="{sec.anchor}">{html.escape(sec.title)}</h2>')
        for t in sec.text:
            md += [t, ""]
            body.append(f"<p>{_inline(t)}</p>")
        if sec.pre:
            md += ["```", sec.pre, "```", ""]
            body.append(f"<pre>{html.escape(sec.pre)}</pre>")
        for name, cap, _fig in sec.figures:
            md += [f"![{cap}](figures/{name}.png)", "", f"*{cap}*", ""]
            uri = "data:image/png;base64," + base64.b64encode(pngs[name]).decode()
            body.append(
                f'<figure id="fig-{name}"><img alt="{html.escape(cap)}" src="{uri}">'
                f"<figcaption>{html.escape(cap)}</figcaption></figure>"
            )
        for cap, df in sec.tables:
            md += [f"**{cap}**", "", _md_table(df), ""]
            body.append(f"<h3>{html.escape(cap)}</h3>" + df.to_html(index=False, border=0))
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    paths = {
        "html": out / "report.html",
        "markdown": out / "report.md",
        "best_practices": out / "best-practices.md",
    }
    write_atomic_bytes(paths["html"], page.encode(), fsync=False)
    write_atomic_bytes(paths["markdown"], "\n".join(md).encode(), fsync=False)
    write_atomic_bytes(paths["best_practices"], best_practices(inp).encode(), fsync=False)
    return paths


def _inline(text: str) -> str:
    """Markdown emphasis and code of our own sentences as HTML (escaped)."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"\*(.+?)\*", r"<i>\1</i>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)
