"""The per-fetch cost model and its robust fit.

One object fetched by the client costs

    duration_ns = per_object_ns + rtt_factor * rtt_ns
                  + max(link_factor * compressed_bytes * 1e9 / bandwidth_bytes_per_s,
                        cpu_ns_per_byte * bytes)

``per_object_ns`` is what every object costs beyond the network (HTTP request, cache file
create/rename, bookkeeping), ``rtt_factor`` the round trips one GET pays (1 on a kept-alive
connection), ``link_factor`` how close the transfer comes to the link rate (1: exactly the
rate) and ``cpu_ns_per_byte`` the client's work per decompressed byte (hash, inflate, cache
write).  The bandwidth term is 0 on an unlimited link.

Latency, link time and client CPU are the three parts; the last two are combined with
``max`` because the client hashes, inflates and writes each block as it arrives (streamed
into the cache, docs/simfs.md), so transfer and processing overlap and the slower one sets
the pace.  The purely additive form (``... + link + cpu``) was tried first on real fetches:
it fits a link factor of 0.40, i.e. transfers faster than the emulated link allows, which is
impossible; the pipelined form fits 1.00 with smaller residuals.  ``form="additive"`` keeps
the additive fit available for comparison.

The fit is ``scipy.optimize.least_squares`` with the ``soft_l1`` loss (outliers from a busy
machine weigh little), started from ordinary least squares.  Confidence intervals come from
the Jacobian (Gauss-Newton covariance scaled by the robust residual variance) and from a
cluster bootstrap: models drawn with replacement, then each drawn model's repetitions drawn
with replacement, and the fit redone.  Only isolated fetches are fitted (no other fetch of the
same load in flight): overlapping ones share the link and measure the scheduler, not the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from cvmfs_modelio.core.errors import UsageError

F64 = npt.NDArray[np.float64]

PARAM_NAMES = ("per_object_ns", "rtt_factor", "link_factor", "cpu_ns_per_byte")
PARAM_UNITS = {
    "per_object_ns": "ns",
    "rtt_factor": "RTTs per object",
    "link_factor": "x link time",
    "cpu_ns_per_byte": "ns/byte",
}
# Values used when the data cannot identify a parameter (e.g. every cell unlimited).
NOMINAL = {"per_object_ns": 0.0, "rtt_factor": 1.0, "link_factor": 1.0, "cpu_ns_per_byte": 0.0}
MIN_FETCHES = 8


@dataclass(frozen=True)
class CostParams:
    """Values of the four per-fetch cost parameters (units in :data:`PARAM_UNITS`)."""

    per_object_ns: float
    rtt_factor: float
    link_factor: float
    cpu_ns_per_byte: float

    @classmethod
    def from_vector(cls, x: npt.ArrayLike) -> CostParams:
        v = np.asarray(x, dtype=np.float64)
        return cls(float(v[0]), float(v[1]), float(v[2]), float(v[3]))

    def vector(self) -> F64:
        return np.array(
            [self.per_object_ns, self.rtt_factor, self.link_factor, self.cpu_ns_per_byte]
        )

    def latency_ns(self, rtt_ns: float) -> float:
        """The part of a fetch that does not depend on its size (ns)."""
        return self.per_object_ns + self.rtt_factor * rtt_ns

    def link_ns(self, compressed_bytes: float, bandwidth: float) -> float:
        """Time the object occupies the link (ns; 0 on an unlimited link)."""
        return self.link_factor * compressed_bytes * 1e9 / bandwidth if bandwidth > 0 else 0.0

    def cpu_ns(self, nbytes: float) -> float:
        return self.cpu_ns_per_byte * nbytes

    def duration_ns(
        self, rtt_ns: float, bandwidth: float, compressed: float, nbytes: float
    ) -> float:
        """Cost of one isolated fetch (ns; the pipelined form)."""
        return self.latency_ns(rtt_ns) + max(
            self.link_ns(compressed, bandwidth), self.cpu_ns(nbytes)
        )


def design(f: pd.DataFrame) -> F64:
    """Design matrix (one row per fetch, one column per parameter) of the linear model."""
    bw = f["bandwidth_bytes_per_s"].to_numpy(dtype=np.float64)
    comp = f["compressed_bytes"].to_numpy(dtype=np.float64)
    link = np.divide(comp * 1e9, bw, out=np.zeros_like(comp), where=bw > 0)
    return np.column_stack(
        [
            np.ones(len(f)),
            f["rtt_ns"].to_numpy(dtype=np.float64),
            link,
            f["bytes"].to_numpy(dtype=np.float64),
        ]
    )


def isolated(f: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """True for fetches during which no other fetch of the same measurement was in flight."""
    out = np.ones(len(f), dtype=bool)
    if len(f) == 0:
        return out
    start = f["start_ns"].to_numpy(dtype=np.int64)
    end = start + f["duration_ns"].to_numpy(dtype=np.int64)
    mids = f["measurement_id"].to_numpy()
    order = np.lexsort((start, mids))
    s, e, m = start[order], end[order], mids[order]
    # overlaps the previous fetch (max end so far within the measurement) or the next one
    prev_end = np.full(len(s), np.iinfo(np.int64).min)
    run_max = np.iinfo(np.int64).min
    for i in range(len(s)):
        if i > 0 and m[i] != m[i - 1]:
            run_max = np.iinfo(np.int64).min
        prev_end[i] = run_max
        run_max = max(run_max, int(e[i]))
    ov_prev = prev_end > s
    ov_next = np.zeros(len(s), dtype=bool)
    same_next = np.append(m[1:] == m[:-1], False)
    ov_next[:-1] = same_next[:-1] & (s[1:] < e[:-1])
    bad = ov_prev | ov_next
    out[order] = ~bad
    return out


def fit_rows(fetches: pd.DataFrame) -> pd.DataFrame:
    """The fetch rows a cost fit uses: data objects, successful, isolated, clean loads."""
    f = fetches
    keep = f["kind"].isin(["chunk", "whole"]).to_numpy().copy()
    for col in ("ok", "measurement_ok"):  # the fetch's own status (optional) and its load's
        if col in f.columns:
            keep &= f[col].astype(bool).to_numpy()
    if "traced" in f.columns:
        keep &= ~f["traced"].astype(bool).to_numpy()
    keep &= (f["duration_ns"] > 0).to_numpy()
    sub = f[keep]
    return sub[isolated(sub)].reset_index(drop=True)


@dataclass(frozen=True)
class RawFit:
    """One robust fit: estimates, Jacobian covariance, residuals (ns), which were free."""

    x: F64
    cov: F64
    residuals: F64
    fitted: F64
    free: npt.NDArray[np.bool_]
    f_scale: float
    form: str = "pipelined"


def identifiable(a: F64) -> npt.NDArray[np.bool_]:
    """Which parameters the data can determine.

    The RTT factor needs two RTTs; the link factor bandwidth-limited fetches; the CPU cost
    fetches on an unlimited link (where nothing hides it).  The others are fixed at
    :data:`NOMINAL` and marked ``fixed`` in the fit."""
    free = np.ones(a.shape[1], dtype=bool)
    free[1] = np.ptp(a[:, 1]) > 0
    free[2] = bool(np.any(a[:, 2] > 0))
    free[3] = bool(np.any(a[:, 2] == 0)) and np.ptp(a[:, 3]) > 0
    return free


def predict_design(a: F64, x: F64, form: str = "pipelined") -> F64:
    """Model durations (ns) of design rows ``a`` under parameters ``x``."""
    if form == "additive":
        out: F64 = a @ x
        return out
    res: F64 = x[0] + x[1] * a[:, 1] + np.maximum(x[2] * a[:, 2], x[3] * a[:, 3])
    return res


def robust_fit(
    f: pd.DataFrame, free: npt.NDArray[np.bool_] | None = None, form: str = "pipelined"
) -> RawFit:
    """Fit the cost model to fetch rows ``f`` (see module docstring)."""
    from scipy.optimize import least_squares

    if len(f) < MIN_FETCHES:
        raise UsageError(
            f"too few fetches to fit the cost model ({len(f)}; need at least {MIN_FETCHES})"
        )
    a = design(f)
    y = f["duration_ns"].to_numpy(dtype=np.float64)
    free = identifiable(a) if free is None else free
    cols = np.flatnonzero(free)
    # Solve in ms with every column scaled to [0, 1] so the solver sees numbers near 1:
    # x_ns = x_s * back.
    colmax = np.maximum(np.abs(a).max(axis=0), 1e-300)
    back = 1e6 / colmax
    a_s = a / colmax
    y_s = y / 1e6
    fixed_s = np.array([NOMINAL[n] for n in PARAM_NAMES]) / back
    # start: ordinary least squares of the additive form
    x0_all, *_ = np.linalg.lstsq(a_s[:, cols], y_s, rcond=None)
    start = fixed_s.copy()
    start[cols] = x0_all
    if form == "pipelined":
        if free[2]:
            start[2] = 1.0 / back[2]
        if free[3]:
            start[3] = max(float(x0_all[int(np.flatnonzero(cols == 3)[0])]), 1e-9)
    x_full = start.copy()

    def full(xf: F64) -> F64:
        v: F64 = x_full.copy()
        v[cols] = xf
        return v

    def resid(xf: F64) -> F64:
        out: F64 = predict_design(a_s, full(xf), form) - y_s
        return out

    def jac(xf: F64) -> F64:
        if form == "additive":
            fixed_cols: F64 = a_s[:, cols]
            return fixed_cols
        v = full(xf)
        link_wins = v[2] * a_s[:, 2] >= v[3] * a_s[:, 3]
        j = np.column_stack(
            [np.ones(len(a_s)), a_s[:, 1], a_s[:, 2] * link_wins, a_s[:, 3] * ~link_wins]
        )
        out: F64 = j[:, cols]
        return out

    # Two passes: the residual scale of the start (a worse model) is too wide a soft_l1
    # threshold; the second pass takes it from the first robust fit's residuals.
    x_cur = start[cols]
    f_scale = 1.0
    res = None
    for _ in range(2):
        r = resid(x_cur)
        mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
        f_scale = max(mad, 0.05)  # ms: never below timer noise
        res = least_squares(resid, x_cur, jac=jac, loss="soft_l1", f_scale=f_scale, method="trf")
        x_cur = np.asarray(res.x, dtype=np.float64)
    assert res is not None
    xs = np.asarray(res.x, dtype=np.float64)
    jm = np.asarray(res.jac, dtype=np.float64)
    dof = max(1, len(y) - len(cols))
    s2 = 2.0 * float(res.cost) / dof
    try:
        cov_s = np.linalg.inv(jm.T @ jm) * s2
    except np.linalg.LinAlgError:
        cov_s = np.full((len(cols), len(cols)), np.nan)
    x = full(xs) * back
    cov = np.zeros((4, 4))
    cov[np.ix_(cols, cols)] = cov_s * np.outer(back[cols], back[cols])
    fitted = predict_design(a, x, form)
    return RawFit(x, cov, y - fitted, fitted, free, f_scale * 1e6, form)


def r_squared(y: F64, fitted: F64) -> float:
    """1 - SS_res / SS_tot (nan for fewer than 2 points or constant ``y``)."""
    if len(y) < 2:
        return float("nan")
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot <= 0:
        return float("nan")
    return 1.0 - float(np.sum((y - fitted) ** 2)) / ss_tot


def cluster_bootstrap(
    f: pd.DataFrame,
    free: npt.NDArray[np.bool_],
    n_boot: int,
    seed: int,
    form: str = "pipelined",
) -> F64:
    """Parameter vectors of ``n_boot`` refits on resampled (model, repetition) clusters."""
    rng = np.random.default_rng(seed)
    models = sorted(f["model"].unique())
    by_model: dict[str, dict[Any, npt.NDArray[np.intp]]] = {}
    for m in models:
        sub = f.index[f["model"] == m]
        reps = f.loc[sub, "rep"].to_numpy()
        by_model[m] = {r: sub[reps == r].to_numpy() for r in np.unique(reps)}
    out = []
    for _ in range(n_boot):
        idx: list[npt.NDArray[np.intp]] = []
        for m in rng.choice(models, size=len(models), replace=True):
            reps = list(by_model[m])
            for r in rng.choice(len(reps), size=len(reps), replace=True):
                idx.append(by_model[m][reps[r]])
        rows = f.loc[np.concatenate(idx)]
        try:
            out.append(robust_fit(rows, free, form).x)
        except UsageError:
            continue
    return np.array(out) if out else np.zeros((0, 4))
