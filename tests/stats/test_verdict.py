"""The verdict (``stats.verdict``) on a synthetic store of known cost: which numbers it takes,
when a gain is within noise, and the exact lines a person reads."""

from __future__ import annotations

from pathlib import Path

from cvmfs_modelio.core import units
from cvmfs_modelio.stats.costmodel import CostParams
from cvmfs_modelio.stats.fit import DEFAULT_CONFIG, fit_store
from cvmfs_modelio.stats.recommend import Scenario, recommend
from cvmfs_modelio.stats.results import load_results
from cvmfs_modelio.stats.synthetic import SynthModel, make_store
from cvmfs_modelio.stats.verdict import format_model, format_verdicts, model_verdict, verdicts

MiB = 1 << 20
RTT = 10_000_000
BW = 100 * MiB


def test_verdict_takes_measured_cells_and_says_when_a_gain_is_real(tmp_path: Path) -> None:
    # a costly object (20 ms) makes unchunked clearly better than 4/8/16 MiB for 20 MiB
    truth = CostParams(20e6, 1.0, 1.0, 1.0)
    models = [SynthModel("big", 20 * MiB), SynthModel("tiny", 3 * MiB, family="hep")]
    configs = [(False, 0, 0, 0), (True, 4 * MiB, 8 * MiB, 16 * MiB), (True, MiB, 2 * MiB, 4 * MiB)]
    nets = [(RTT, BW), (30_000_000, BW)]
    store = make_store(tmp_path / "s", truth, models, configs, nets, reps=3, seed=1)
    fit = fit_store(load_results(store), n_boot=30)
    rec = recommend(fit, "cold-start", Scenario(RTT, BW))
    vs = verdicts(fit, rec)
    by = {v.family: v for v in vs}
    assert set(by) == {"mlp", "hep"}
    assert by["hep"].kind == "chunking-irrelevant"
    mlp = by["mlp"]
    assert mlp.best == "unchunked" and mlp.server_conf == ["CVMFS_USE_FILE_CHUNKING=false"]
    (big,) = mlp.models
    c = fit.cells
    at = c[(c["model"] == "big") & (c["rtt_ns"] == RTT)]
    best = at[~at["chunking"].astype(bool)].iloc[0]
    dflt = at[at["chunk_avg_bytes"] == DEFAULT_CONFIG.avg_size].iloc[0]
    assert big.basis == "measured" and big.n == 3
    assert (big.best_ns, big.best_lo_ns, big.best_hi_ns) == (
        best["measured_ns"],
        best["measured_min_ns"],
        best["measured_max_ns"],
    )
    assert big.default_ns == dflt["measured_ns"]
    assert big.gain == 1 - best["measured_ns"] / dflt["measured_ns"] > 0.1
    assert big.predicted_gain_lo > 0 and not big.within_noise
    ms = units.fmt_ns
    assert format_model(big) == (
        f"big: {ms(big.best_ns)} to first inference ({ms(big.best_lo_ns)} .. "
        f"{ms(big.best_hi_ns)}, min .. max of 3 cold loads); {100 * big.gain:.0f}% faster than "
        f"the defaults ({ms(big.default_ns)}; measured; predicted "
        f"{100 * big.predicted_gain:+.0f}% [{100 * big.predicted_gain_lo:+.0f}%, "
        f"{100 * big.predicted_gain_hi:+.0f}%])"
    )
    # a file below the minimum: the defaults' numbers, and no gain by construction
    (tiny,) = by["hep"].models
    assert tiny.within_noise and tiny.default_ns == tiny.best_ns
    lines = format_verdicts(vs)
    i = lines.index("hep: chunking cannot matter: every file is below the minimum chunk size")
    assert lines[i + 1].endswith("the same objects under every configuration: no gain to be had")
    assert "mlp: publish unchunked" in lines
    # when the answer is the defaults themselves there is no gain to claim
    fa = next(a for a in rec.families if a.family == "mlp")
    fa.best = DEFAULT_CONFIG
    same = model_verdict(fit, fa, "big", rec)
    assert same.within_noise and same.gain == 0.0
