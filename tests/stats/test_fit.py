"""The cost-model fit recovers known parameters from synthetic fetch logs with known cost."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.stats.costmodel import PARAM_NAMES, CostParams
from cvmfs_modelio.stats.fit import Config, fit_store
from cvmfs_modelio.stats.results import load_results
from cvmfs_modelio.stats.synthetic import SynthModel, make_store

MiB = 1 << 20
CONFIGS = [(False, 0, 0, 0), (True, 1 * MiB, 2 * MiB, 4 * MiB), (True, 2 * MiB, 4 * MiB, 8 * MiB)]
NETS = [(2_000_000, 0), (2_000_000, 100 * MiB), (30_000_000, 0), (30_000_000, 50 * MiB)]
MODELS = [SynthModel("a", 6 * MiB), SynthModel("b", 11 * MiB), SynthModel("c", 9 * MiB + 12345)]


def _store(tmp: Path, params: CostParams, **kw: object) -> Path:
    return make_store(tmp / "store", params, MODELS, CONFIGS, NETS, **kw)  # type: ignore[arg-type]


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    per_object_ms=st.floats(0.2, 8.0),
    rtt_factor=st.floats(0.8, 2.5),
    link_factor=st.floats(0.8, 1.3),
    cpu=st.floats(0.5, 12.0),
    seed=st.integers(0, 2**16),
)
def test_fit_recovers_known_parameters(
    per_object_ms: float, rtt_factor: float, link_factor: float, cpu: float, seed: int
) -> None:
    truth = CostParams(per_object_ms * 1e6, rtt_factor, link_factor, cpu)
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(tmp), truth, seed=seed)
        fit = fit_store(load_results(store), n_boot=30, seed=seed)
    assert fit.client_profile == "cvmfs-2.12"
    est = fit.params
    assert est["per_object_ns"].value == pytest.approx(truth.per_object_ns, abs=0.15e6)
    assert est["rtt_factor"].value == pytest.approx(rtt_factor, rel=0.02)
    assert est["link_factor"].value == pytest.approx(link_factor, rel=0.02)
    assert est["cpu_ns_per_byte"].value == pytest.approx(cpu, rel=0.03)
    for name in PARAM_NAMES:
        p = est[name]
        assert not p.fixed
        lo, hi = p.ci_jacobian
        assert lo < p.value < hi
        blo, bhi = p.ci_bootstrap
        assert blo <= p.value <= bhi
        # the truth lies within the interval widened to 4 standard errors
        sd = (hi - lo) / (2 * 1.96)
        assert abs(p.value - getattr(truth, name)) < 4 * sd + 1e-9 * abs(p.value)
    # cold loads are warm + the modelled stall: the TTFI model must reproduce them
    assert fit.ttfi_r2 > 0.99
    assert fit.median_abs_rel_err < 0.02
    assert fit.cv_median_abs_rel_err < 0.03
    assert set(fit.cv_by_model) == {"a", "b", "c"}


def test_outliers_do_not_move_the_robust_fit(tmp_path: Path) -> None:
    truth = CostParams(2e6, 1.0, 1.0, 4.0)
    store = _store(tmp_path, truth, outlier_fraction=0.1, outlier_ns=200e6, seed=3)
    fit = fit_store(load_results(store), n_boot=0)
    assert fit.params["per_object_ns"].value == pytest.approx(2e6, abs=0.3e6)
    assert fit.params["rtt_factor"].value == pytest.approx(1.0, rel=0.03)
    assert fit.params["cpu_ns_per_byte"].value == pytest.approx(4.0, rel=0.05)
    # the residuals hold the outliers (the fit ignored them rather than absorbing them)
    assert np.sum(fit.fetch_residuals_ns > 20e6) > 0.05 * fit.n_fetches


def test_unidentified_parameters_are_fixed_and_said(tmp_path: Path) -> None:
    truth = CostParams(1e6, 1.0, 1.0, 3.0)
    store = make_store(
        tmp_path / "s", truth, MODELS[:2], CONFIGS, [(2_000_000, 0), (20_000_000, 0)], reps=2
    )
    fit = fit_store(load_results(store), n_boot=0)
    assert fit.params["link_factor"].fixed
    assert fit.params["link_factor"].value == 1.0
    assert not fit.params["cpu_ns_per_byte"].fixed
    assert "fixed" in fit.summary()


def test_prediction_uses_layout_and_prefetch(tmp_path: Path) -> None:
    truth = CostParams(1e6, 1.0, 1.0, 2.0)
    fit = fit_store(load_results(_store(tmp_path, truth, reps=2)), n_boot=0)
    small = Config.xor32(MiB, 2 * MiB, 4 * MiB)
    whole = Config(False)
    rtt = 50_000_000
    p_small = fit.predict_ns("b", small, rtt, 100 * MiB)
    p_whole = fit.predict_ns("b", whole, rtt, 100 * MiB)
    n_chunks = fit.profile("b").layouts(small)[0].n_chunks
    # one round trip per chunk on the critical path, serially
    assert p_small - p_whole == pytest.approx((n_chunks - 1) * rtt, rel=0.1)
    # a client prefetching 8 chunks hides most of those round trips
    p_pref = fit.predict_ns("b", small, rtt, 100 * MiB, prefetch=8)
    assert p_pref < p_whole + 2 * rtt
    assert fit.profile("a").below_min(Config.xor32(8 * MiB, 16 * MiB, 32 * MiB))


def test_profiles_must_be_chosen(tmp_path: Path) -> None:
    truth = CostParams(1e6, 1.0, 1.0, 2.0)
    a = make_store(
        tmp_path / "a", truth, MODELS[:2], CONFIGS[:2], NETS, reps=1, client_profile="fast"
    )
    res = load_results(a)
    # one profile only: it is used, and the summary says it is not the calibrated one
    fit = fit_store(res, n_boot=0)
    assert fit.client_profile == "fast"
    assert "NOT the calibrated cvmfs-2.12 profile" in fit.summary()
    res.measurements = pd.concat(
        [res.measurements, res.measurements.assign(client_profile="real")], ignore_index=True
    )
    with pytest.raises(UsageError, match=r"several client profiles \(fast, real\)"):
        fit_store(res, n_boot=0)
    with pytest.raises(UsageError, match=r"--client-profile nope: .* has fast, real profile"):
        fit_store(res, "nope", n_boot=0)


def test_store_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such results directory"):
        load_results(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    with pytest.raises(UsageError, match=r"not a results store \(no store.json\)"):
        load_results(tmp_path / "x")
    truth = CostParams(1e6, 1.0, 1.0, 2.0)
    store = make_store(tmp_path / "s", truth, MODELS[:1], CONFIGS[:1], NETS[:1], reps=1)
    meta = json.loads((store / "store.json").read_text())
    meta["schema"]["version"] = 1
    (store / "store.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="schema version 1, this tool reads version 2"):
        load_results(store)
    meta["schema"]["version"] = 2
    (store / "store.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="too few fetches to fit the cost model"):
        fit_store(load_results(store), n_boot=0)
