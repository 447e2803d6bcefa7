"""The verdict: what a person does with a recommendation, per model family, in a few lines.

For every family answer of a :class:`~cvmfs_modelio.stats.recommend.Recommendation`: the best
configuration, each model's time to first inference under it with its spread, and the gain
over the defaults (4/8/16 MiB), or "within noise".  Where both the best configuration and the
defaults were measured at the recommendation's scenario (RTT, bandwidth, prefetch), the numbers
are the measured cold loads (median, min..max over the repetitions); otherwise the fit's
predictions with their 95% bootstrap interval.  Beside it, the fit's predicted gain with its
interval; "within noise" as :func:`model_verdict` says.  Times in ns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cvmfs_modelio.core import units
from cvmfs_modelio.stats.fit import DEFAULT_CONFIG, Config, CostModelFit
from cvmfs_modelio.stats.recommend import FamilyAnswer, Recommendation


@dataclass(frozen=True)
class ModelVerdict:
    """One model under the family's best configuration and under the defaults (ns)."""

    model: str
    basis: str  # "measured" (cold loads at the scenario) or "predicted" (the fit)
    best_ns: float
    best_lo_ns: float  # measured: min; predicted: 2.5th percentile of the bootstrap
    best_hi_ns: float
    default_ns: float
    default_lo_ns: float
    default_hi_ns: float
    n: int  # cold loads behind each measured number (0 when predicted)
    gain: float  # 1 - best / default, of the numbers above
    predicted_gain: float  # the same from the fit (one warm baseline for both: no drift)
    predicted_gain_lo: float  # its 95% bootstrap interval
    predicted_gain_hi: float
    within_noise: bool


@dataclass
class FamilyVerdict:
    family: str
    kind: str  # as FamilyAnswer.kind
    best: str  # label of the best configuration
    server_conf: list[str]
    models: list[ModelVerdict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "models": [asdict(m) for m in self.models]}


def _measured(fit: CostModelFit, model: str, cfg: Config, rec: Recommendation) -> Any:
    c = fit.cells
    sc = rec.scenario
    hit = c[
        (c["model"] == model)
        & (c["chunking"].astype(bool) == cfg.chunking)
        & (c["rtt_ns"] == sc.rtt_ns)
        & (c["bandwidth_bytes_per_s"] == sc.bandwidth)
        & (c["prefetch_depth"] == sc.prefetch)
    ]
    if cfg.chunking:
        hit = hit[
            (hit["chunk_min_bytes"] == cfg.min_size)
            & (hit["chunk_avg_bytes"] == cfg.avg_size)
            & (hit["chunk_max_bytes"] == cfg.max_size)
        ]
    return hit.iloc[0] if len(hit) else None


def _predicted(
    fit: CostModelFit, model: str, cfg: Config, rec: Recommendation
) -> tuple[float, float, float]:
    sc = rec.scenario
    mid = fit.predict_ns(model, cfg, sc.rtt_ns, sc.bandwidth, sc.prefetch, sc.parallel)
    if len(fit.bootstrap) >= 10:
        boot = fit.predict_boot_ns(model, cfg, sc.rtt_ns, sc.bandwidth, sc.prefetch, sc.parallel)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        return mid, float(lo), float(hi)
    return mid, mid, mid


def _predicted_gain(
    fit: CostModelFit, model: str, best: Config, rec: Recommendation
) -> tuple[float, float, float]:
    sc = rec.scenario
    args = (sc.rtt_ns, sc.bandwidth, sc.prefetch, sc.parallel)
    g = 1.0 - fit.predict_ns(model, best, *args) / fit.predict_ns(model, DEFAULT_CONFIG, *args)
    if len(fit.bootstrap) < 10:
        return g, g, g
    b = fit.predict_boot_ns(model, best, *args)
    d = fit.predict_boot_ns(model, DEFAULT_CONFIG, *args)
    lo, hi = np.percentile(1.0 - b / d, [2.5, 97.5])
    return g, float(lo), float(hi)


def model_verdict(fit: CostModelFit, fa: FamilyAnswer, model: str, rec: Recommendation) -> Any:
    """The model under the family's best configuration against the defaults.

    A family whose files are all below the minimum chunk size is stored as one object per
    file under every configuration: its numbers are the defaults' and the gain is noise by
    construction.  Otherwise the gain is within noise when the fit's 95% interval of it
    contains zero, or (measured) when the repetitions' ranges overlap or the measured gain
    and the fit's disagree in sign: measured cells are minutes apart on a shared machine,
    the fit compares configurations on one warm baseline."""
    irrelevant = fa.kind == "chunking-irrelevant"
    cfg = DEFAULT_CONFIG if irrelevant else fa.best
    best = _measured(fit, model, cfg, rec)
    default = _measured(fit, model, DEFAULT_CONFIG, rec)
    pg = _predicted_gain(fit, model, cfg, rec)
    noise = irrelevant or cfg == DEFAULT_CONFIG or pg[1] <= 0.0 <= pg[2]
    if best is not None and default is not None:
        b = (
            float(best["measured_ns"]),
            float(best["measured_min_ns"]),
            float(best["measured_max_ns"]),
        )
        d = (
            float(default["measured_ns"]),
            float(default["measured_min_ns"]),
            float(default["measured_max_ns"]),
        )
        n = int(min(best["n"], default["n"]))
        basis = "measured"
        gain = 1.0 - b[0] / d[0] if d[0] else 0.0
        noise = noise or (b[2] >= d[1] and d[2] >= b[1]) or (gain > 0) != (pg[0] > 0)
    else:
        b = _predicted(fit, model, cfg, rec)
        d = _predicted(fit, model, DEFAULT_CONFIG, rec)
        n = 0
        basis = "predicted"
        gain = pg[0]
    return ModelVerdict(model, basis, *b, *d, n, gain, *pg, noise)


def verdicts(fit: CostModelFit, rec: Recommendation) -> list[FamilyVerdict]:
    """One :class:`FamilyVerdict` per family answer, in the recommendation's order."""
    out = []
    for fa in rec.families:
        fv = FamilyVerdict(fa.family, fa.kind, fa.best.label, fa.server_conf())
        fv.models = [model_verdict(fit, fa, m, rec) for m in fa.models]
        out.append(fv)
    return out


def _ms(ns: float) -> str:
    return units.fmt_ns(ns)


def format_model(v: ModelVerdict, irrelevant: bool = False) -> str:
    spread = f"{_ms(v.best_lo_ns)} .. {_ms(v.best_hi_ns)}, "
    if v.basis == "predicted":
        what = "95% interval, predicted"
    elif v.n == 1:
        spread, what = "", "one cold load: no spread"
    else:
        what = f"min .. max of {v.n} cold loads"
    pred = (
        f"predicted {100 * v.predicted_gain:+.0f}% [{100 * v.predicted_gain_lo:+.0f}%, "
        f"{100 * v.predicted_gain_hi:+.0f}%]"
    )
    if irrelevant:
        gain = "the same objects under every configuration: no gain to be had"
    elif v.within_noise:
        measured = f"measured {100 * v.gain:+.0f}%, " if v.basis == "measured" else ""
        gain = f"vs {_ms(v.default_ns)} at the defaults: within noise ({measured}{pred})"
    else:
        faster = "faster" if v.gain > 0 else "slower"
        how = "measured; " if v.basis == "measured" else ""
        gain = (
            f"{100 * abs(v.gain):.0f}% {faster} than the defaults ({_ms(v.default_ns)}; "
            f"{how}{pred})"
        )
    return f"{v.model}: {_ms(v.best_ns)} to first inference ({spread}{what}); {gain}"


def format_verdicts(fvs: list[FamilyVerdict]) -> list[str]:
    lines = []
    for fv in fvs:
        if fv.kind == "chunking-irrelevant":
            head = "chunking cannot matter: every file is below the minimum chunk size"
        elif fv.best == DEFAULT_CONFIG.label:
            head = "keep the defaults 4/8/16 MiB"
        else:
            head = "publish unchunked" if fv.best == "unchunked" else f"publish with {fv.best}"
        lines.append(f"{fv.family}: {head}")
        irrelevant = fv.kind == "chunking-irrelevant"
        lines += [f"  {format_model(m, irrelevant)}" for m in fv.models]
        lines += [f"  server.conf: {ln}" for ln in fv.server_conf]
    return lines


def prefetch_finding(rec: Recommendation) -> list[str]:
    """One line per family with chunked files: what client-side prefetch would buy."""
    parts = []
    for fa in rec.families:
        if not fa.prefetch or fa.kind == "chunking-irrelevant":
            continue
        top = max(fa.prefetch, key=lambda d: d["small_saving"])
        dflt = max(fa.prefetch, key=lambda d: d["default_saving"])
        unch = fa.prefetch[0]["unchunked_ns"]
        parts.append(
            f"{fa.family}: depth {top['depth']} cuts a cold load at {top['small_chunks']} chunks "
            f"by {100 * top['small_saving']:.0f}% to {_ms(top['small_ns'])}; at the defaults "
            f"depth {dflt['depth']} cuts {100 * dflt['default_saving']:.0f}% to "
            f"{_ms(dflt['default_ns'])}; unchunked without prefetch: {_ms(unch)}"
        )
    return parts or ["no family with chunked files to prefetch"]


def format_validation_line(v: Any) -> str:
    w = v.worst_cell
    verdict = "meets" if v.meets_target else "MISSES"
    return (
        f"predicted vs measured on {len(v.models)} models not in the fit at "
        f"{', '.join(f'{r / 1e6:g}' for r in v.rtts_ns)} ms: median |error| "
        f"{100 * v.median_abs_rel_err:.1f}% ({verdict} the 10% target) over {len(v.cells)} cells, "
        f"worst {100 * v.worst_abs_rel_err:.1f}% ({w['model']} {w['config']} at "
        f"{w['rtt_ns'] / 1e6:g} ms: measured {_ms(w['measured_ns'])}, predicted "
        f"{_ms(w['predicted_ns'])})"
    )
