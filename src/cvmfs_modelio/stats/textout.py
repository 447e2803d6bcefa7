"""Recommendations and validations as people read them (``recommend`` prints, ``report`` embeds)."""

from __future__ import annotations

from typing import Any

from cvmfs_modelio.core import units
from cvmfs_modelio.core.tables import format_table


def _ms(ns: float) -> str:
    return units.fmt_ns(ns)


def format_recommendation(fit: Any, rec: Any) -> str:
    """The recommendation as people read it (also used by ``report``)."""
    from cvmfs_modelio.stats.fit import CALIBRATED_PROFILE, DEFAULT_CONFIG

    p = fit.params
    lines = [
        f"Recommendation for {rec.scenario.label()}, objective {rec.objective}",
        f"client profile: {fit.client_profile}"
        + (
            ""
            if fit.client_profile == CALIBRATED_PROFILE
            else f" (the numbers are for this profile, NOT the calibrated {CALIBRATED_PROFILE})"
        ),
        "cost per fetched object: "
        f"{_ms(p['per_object_ns'].value)} "
        f"[{_ms(p['per_object_ns'].ci_bootstrap[0])}, {_ms(p['per_object_ns'].ci_bootstrap[1])}]"
        f" + {p['rtt_factor'].value:.2f} RTT + max(link x {p['link_factor'].value:.2f}, "
        f"{p['cpu_ns_per_byte'].value:.2f} ns/byte); time-to-first-inference model: "
        f"R² {fit.ttfi_r2:.2f}, leave-one-model-out median error "
        f"{100 * fit.cv_median_abs_rel_err:.1f}%",
    ]
    for fa in rec.families:
        lines += ["", f"== family {fa.family}: {', '.join(fa.models)}"]
        lines += ["server.conf:"] + [f"  {ln}" for ln in fa.server_conf()]
        ci = (
            f" (95% interval {100 * fa.gain_ci[0]:+.1f}% .. {100 * fa.gain_ci[1]:+.1f}%)"
            if fa.gain_ci
            else ""
        )
        lines.append(
            f"predicted gain over the defaults ({DEFAULT_CONFIG.label}): "
            f"{100 * fa.gain:+.1f}%{ci}, {_ms(fa.gain_ns)} per cold load on average"
        )
        rows = [
            [
                m,
                _ms(fa.default_ns[m]),
                _ms(fa.predicted_ns[m]),
                f"{100 * (1 - fa.predicted_ns[m] / fa.default_ns[m]):+.1f}%",
                "chunking cannot matter for this file" if m in fa.below_min else "",
            ]
            for m in fa.models
        ]
        lines.append(
            format_table(
                ["model", "defaults", fa.best.label, "saving", ""],
                rows,
            )
        )
        ranked = sorted(fa.scores.items(), key=lambda kv: kv[1])
        lines.append(
            "candidates (objective relative to the defaults): "
            + ", ".join(f"{k} {v:.2f}" for k, v in ranked)
        )
        if fa.rtt_sweep:
            if fa.break_even_rtt_ns:
                for r, lo, hi in fa.break_even_rtt_ns:
                    lines.append(f"RTT: {lo} below {r / 1e6:.1f} ms, {hi} above (break-even)")
            else:
                lines.append(
                    f"RTT: {fa.rtt_sweep[0][1]} is best at every RTT from "
                    f"{fa.rtt_sweep[0][0] / 1e6:g} to {fa.rtt_sweep[-1][0] / 1e6:g} ms "
                    "(no break-even)"
                )
        if fa.bandwidth_sweep:
            lines.append(
                "bandwidth: "
                + ", ".join(
                    f"{units.fmt_rate(b) if b else 'unlimited'} -> {lab}"
                    for b, lab in fa.bandwidth_sweep
                )
            )
        if fa.prefetch:
            lines.append(
                "client-side prefetch (cmio-simfs --prefetch N; cvmfs2 has none): predicted cold "
                "load, saving against no prefetch"
            )
            lines.append(
                format_table(
                    [
                        "depth",
                        f"defaults {DEFAULT_CONFIG.label}",
                        "saving",
                        fa.prefetch[0]["small_chunks"],
                        "saving",
                        "unchunked",
                    ],
                    [
                        [
                            str(d["depth"]),
                            _ms(d["default_ns"]),
                            f"{100 * d['default_saving']:.1f}%",
                            _ms(d["small_ns"]),
                            f"{100 * d['small_saving']:.1f}%",
                            _ms(d["unchunked_ns"]),
                        ]
                        for d in fa.prefetch
                    ],
                )
            )
        lines += [f"note: {n}" for n in fa.notes]
    return "\n".join(lines)


def format_validation(v: Any) -> str:
    """Predicted vs measured on unseen models and RTTs."""
    rows = [
        [
            str(r["model"]),
            str(r["config"]),
            f"{r['rtt_ns'] / 1e6:g} ms",
            _ms(r["measured_ns"]),
            _ms(r["predicted_ns"]),
            f"{100 * r['rel_err']:+.1f}%",
        ]
        for _i, r in v.cells.iterrows()
    ]
    verdict = "meets" if v.meets_target else "MISSES"
    w = v.worst_cell
    return "\n".join(
        [
            f"Validation on models not in the fit ({', '.join(v.models)}) at RTTs not in the fit "
            f"({', '.join(f'{r / 1e6:g} ms' for r in v.rtts_ns)}), client profile "
            f"{v.client_profile}:",
            format_table(["model", "config", "RTT", "measured", "predicted", "error"], rows),
            f"median |error| {100 * v.median_abs_rel_err:.1f}% ({verdict} the 10% target), "
            f"worst {100 * v.worst_abs_rel_err:.1f}% ({w['model']}, {w['config']}, "
            f"{w['rtt_ns'] / 1e6:g} ms: measured {_ms(w['measured_ns'])}, predicted "
            f"{_ms(w['predicted_ns'])})",
        ]
    )
