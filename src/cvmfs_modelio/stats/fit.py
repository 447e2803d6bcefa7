"""The one fit of a results store: per-fetch cost parameters and the time-to-first-inference model.

:func:`fit_store` reads nothing but a :class:`~cvmfs_modelio.stats.results.Results` and
returns a :class:`CostModelFit`: the four cost parameters with Jacobian and bootstrap 95%
intervals, the per-fetch residuals and R², every cold cell's measured time to first
inference against the model's prediction (in-sample and leave-one-model-out), and the
recorded load pattern of every model, so that ``recommend``, ``report`` and the tests ask
the fit object for predictions and never fit again.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from cvmfs_modelio.chunks.layouts import ChunkSpec, Layout, compute_layout, whole_layout
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.stats import DEFAULT_BOOT
from cvmfs_modelio.stats.access import FileInfo, LoadPattern, Touches, simulate_stall, touches
from cvmfs_modelio.stats.costmodel import (
    PARAM_NAMES,
    PARAM_UNITS,
    CostParams,
    RawFit,
    cluster_bootstrap,
    fit_rows,
    r_squared,
    robust_fit,
)
from cvmfs_modelio.stats.results import Results

F64 = npt.NDArray[np.float64]
CALIBRATED_PROFILE = "cvmfs-2.12"
CELL_KEYS = [
    "model",
    "chunking",
    "chunk_min_bytes",
    "chunk_avg_bytes",
    "chunk_max_bytes",
    "rtt_ns",
    "bandwidth_bytes_per_s",
    "prefetch_depth",
    "parallel_handles",
    "loader",
]


@dataclass(frozen=True)
class Config:
    """A chunk configuration (bytes); ``chunking=False`` stores files whole."""

    chunking: bool
    min_size: int = 0
    avg_size: int = 0
    max_size: int = 0

    @classmethod
    def xor32(cls, min_size: int, avg_size: int, max_size: int) -> Config:
        return cls(True, min_size, avg_size, max_size)

    @property
    def label(self) -> str:
        if not self.chunking:
            return "unchunked"
        return "/".join(units.fmt_bytes(s).replace(".0 ", " ") for s in self.key()[1:])

    def key(self) -> tuple[bool, int, int, int]:
        return (self.chunking, self.min_size, self.avg_size, self.max_size)


DEFAULT_CONFIG = Config.xor32(4 << 20, 8 << 20, 16 << 20)


@dataclass(frozen=True)
class ParamEstimate:
    """One cost parameter: estimate, 95% intervals (Jacobian, bootstrap), unit, fixed or fitted."""

    name: str
    value: float
    ci_jacobian: tuple[float, float]
    ci_bootstrap: tuple[float, float]
    unit: str
    fixed: bool


@dataclass
class ModelProfile:
    """What the fit knows of one model: files on disk, family, its recorded warm load."""

    model: str
    family: str
    model_bytes: int
    model_path: str
    paths: tuple[str, ...]  # source file of each pattern file
    pattern: LoadPattern
    baseline_by_config: dict[tuple[bool, int, int, int], float]
    _layouts: dict[tuple[bool, int, int, int], list[Layout]] = field(default_factory=dict)
    _touches: dict[tuple[bool, int, int, int], Touches] = field(default_factory=dict)

    def layouts(self, config: Config) -> list[Layout]:
        """Layouts of the model's files under ``config`` (CVMFS-exact xor32 chunker)."""
        key = config.key()
        if key not in self._layouts:
            out = []
            for p in self.paths:
                if not config.chunking:
                    out.append(whole_layout(os.stat(p).st_size))
                else:
                    spec = ChunkSpec("xor32", config.min_size, config.avg_size, config.max_size)
                    out.append(compute_layout(p, spec))
            self._layouts[key] = out
        return self._layouts[key]

    def touches(self, config: Config) -> Touches:
        key = config.key()
        if key not in self._touches:
            self._touches[key] = touches(self.pattern, self.layouts(config))
        return self._touches[key]

    def baseline_ns(self, config: Config | None = None) -> float:
        """Warm time to first inference (ns): the median over every measured configuration.

        The same for every configuration on purpose: what a load computes does not depend
        on the chunking, and warm loads of different cells differ here by machine load, which
        must not make one configuration look better than another."""
        del config
        return float(np.median(list(self.baseline_by_config.values())))

    def below_min(self, config: Config) -> bool:
        """True when no file of the model is larger than ``min``: chunking cannot matter."""
        return all(fi.size <= config.min_size for fi in self.pattern.files)


@dataclass
class CostModelFit:
    """Everything one fit says (see module docstring).  Times in ns, sizes in bytes."""

    client_profile: str
    params: dict[str, ParamEstimate]
    n_fetches: int
    fetch_r2: float
    fetch_residuals_ns: F64
    fetch_fitted_ns: F64
    f_scale_ns: float
    bootstrap: F64  # (n, 4) parameter vectors of the bootstrap refits
    cells: pd.DataFrame  # one row per cold cell: measured, predicted, cv_predicted, ...
    ttfi_r2: float
    cv_r2: float
    median_abs_rel_err: float
    cv_median_abs_rel_err: float
    cv_by_model: dict[str, float]
    profiles: dict[str, ModelProfile]
    n_boot: int
    seed: int
    store: str
    other_profiles: list[str] = field(default_factory=list)
    form: str = "pipelined"
    additive: dict[str, float] = field(default_factory=dict)  # the additive form, compared

    # -- predictions
    @property
    def estimate(self) -> CostParams:
        return CostParams(*(self.params[n].value for n in PARAM_NAMES))

    def predict_ns(
        self,
        model: str,
        config: Config,
        rtt_ns: float,
        bandwidth: float,
        prefetch: int = 0,
        parallel: int = 16,
        params: CostParams | None = None,
    ) -> float:
        """Predicted cold time to first inference of ``model`` (ns)."""
        prof = self.profile(model)
        t = prof.touches(config)
        stall = simulate_stall(t, params or self.estimate, rtt_ns, bandwidth, prefetch, parallel)
        return prof.baseline_ns(config) + stall

    def predict_boot_ns(
        self,
        model: str,
        config: Config,
        rtt_ns: float,
        bandwidth: float,
        prefetch: int = 0,
        parallel: int = 16,
    ) -> F64:
        """The prediction under every bootstrap parameter vector (ns)."""
        return np.array(
            [
                self.predict_ns(
                    model, config, rtt_ns, bandwidth, prefetch, parallel, CostParams.from_vector(b)
                )
                for b in self.bootstrap
            ]
        )

    def profile(self, model: str) -> ModelProfile:
        try:
            return self.profiles[model]
        except KeyError:
            raise UsageError(f"model {model!r} has no recorded load in {self.store}") from None

    # -- people
    def summary(self) -> str:
        """A readable account of the fit (what a person checks before trusting it)."""
        lines = [
            f"Cost model fit of {self.store}",
            f"client profile: {self.client_profile}"
            + (
                ""
                if self.client_profile == CALIBRATED_PROFILE
                else f"  (NOT the calibrated {CALIBRATED_PROFILE} profile)"
            ),
            f"per-fetch fit: {self.n_fetches} isolated fetches, scipy least_squares soft_l1 "
            f"(f_scale {units.fmt_ns(self.f_scale_ns)}), R² {self.fetch_r2:.3f}",
            "",
            f"{'parameter':<18}{'estimate':>14}  {'95% CI (Jacobian)':>26}  "
            f"{'95% CI (bootstrap)':>26}  unit",
        ]
        for p in self.params.values():
            ci_j = "fixed" if p.fixed else f"[{_num(p.ci_jacobian[0])}, {_num(p.ci_jacobian[1])}]"
            ci_b = "fixed" if p.fixed else f"[{_num(p.ci_bootstrap[0])}, {_num(p.ci_bootstrap[1])}]"
            lines.append(f"{p.name:<18}{_num(p.value):>14}  {ci_j:>26}  {ci_b:>26}  {p.unit}")
        if self.additive:
            a = self.additive
            lines.append(
                f"(form {self.form}: latency + max(link, CPU); the additive form latency + link"
                f" + CPU fits link_factor {a['link_factor']:.3f}, cpu_ns_per_byte "
                f"{a['cpu_ns_per_byte']:.3g}, median |residual| "
                f"{units.fmt_ns(a['median_abs_residual_ns'])} against "
                f"{units.fmt_ns(float(np.median(np.abs(self.fetch_residuals_ns))))})"
            )
        lines += [
            f"(bootstrap: {len(self.bootstrap)} refits over models and repetitions, "
            f"seed {self.seed})",
            "",
            f"time to first inference, {len(self.cells)} cold cells: R² {self.ttfi_r2:.3f}, "
            f"median |error| {100 * self.median_abs_rel_err:.1f}%",
            f"leave-one-model-out: R² {self.cv_r2:.3f}, median |error| "
            f"{100 * self.cv_median_abs_rel_err:.1f}%  ("
            + ", ".join(f"{m} {100 * v:.1f}%" for m, v in sorted(self.cv_by_model.items()))
            + ")",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ns, bytes)."""
        return {
            "client_profile": self.client_profile,
            "store": self.store,
            "params": {
                n: {
                    "value": p.value,
                    "ci95_jacobian": list(p.ci_jacobian),
                    "ci95_bootstrap": list(p.ci_bootstrap),
                    "unit": p.unit,
                    "fixed": p.fixed,
                }
                for n, p in self.params.items()
            },
            "n_fetches": self.n_fetches,
            "fetch_r2": self.fetch_r2,
            "ttfi_r2": self.ttfi_r2,
            "cv_r2": self.cv_r2,
            "median_abs_rel_err": self.median_abs_rel_err,
            "cv_median_abs_rel_err": self.cv_median_abs_rel_err,
            "cv_by_model": self.cv_by_model,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "loss": "soft_l1",
            "f_scale_ns": self.f_scale_ns,
            "form": self.form,
            "additive_form": self.additive,
        }


def _num(v: float) -> str:
    if not math.isfinite(v):
        return "nan"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


# ------------------------------------------------------------------ building the fit


def choose_profile(res: Results, wanted: str | None) -> str:
    """The client profile to fit: ``wanted``, else the calibrated one, else the only one."""
    have = res.profiles()
    if wanted is not None:
        if wanted not in have:
            raise UsageError(
                f"--client-profile {wanted}: {res.path} has {', '.join(have) or 'no'} profile(s)"
            )
        return wanted
    if CALIBRATED_PROFILE in have:
        return CALIBRATED_PROFILE
    if len(have) == 1:
        return have[0]
    raise UsageError(
        f"{res.path}: measurements of several client profiles ({', '.join(have)}); "
        "choose one with --client-profile"
    )


def _clean_cold(m: pd.DataFrame) -> pd.Series:
    traced = m["traced"].astype(bool) if "traced" in m.columns else False
    return (
        (m["cache_state"] == "cold")
        & m["ok"].astype(bool)
        & m["cold_verified"].astype(bool)
        & ~traced
        & (m["target"] == "emulated")
    )


_REGENERATED: dict[str, Path] = {}


def _regenerate(row: Any) -> Path | None:
    """The entry file of a generated model (``model_source`` a campaign kind), written again.

    A campaign generates its models in scratch space that the run removes; the kinds are
    deterministic by their parameters, so the same bytes are written once per process into
    a temporary directory removed at exit.  None for a declared file (or no source)."""
    import atexit
    import json
    import shutil
    import tempfile

    from cvmfs_modelio.campaign.modelsrc import materialize
    from cvmfs_modelio.campaign.spec import ModelSpec

    raw = str(row.get("model_source", "") or "")
    try:
        src = json.loads(raw) if raw else {}
    except ValueError:
        return None
    kind = src.pop("kind", "file") if isinstance(src, dict) else "file"
    if kind == "file":
        return None
    if raw not in _REGENERATED:
        tmp = Path(tempfile.mkdtemp(prefix="cvmfs-modelio-regen-"))
        atexit.register(shutil.rmtree, tmp, True)
        inst = materialize(ModelSpec(str(row["model"]), kind, None, src), tmp)
        if inst.model_bytes != int(row["model_bytes"]):
            raise UsageError(
                f"model {row['model']}: regenerated from {raw} it has {inst.model_bytes} bytes, "
                f"the store measured {int(row['model_bytes'])} (another cvmfs-modelio version?)"
            )
        _REGENERATED[raw] = inst.entry
    return _REGENERATED[raw]


def _model_files(model_path: str, row: Any = None) -> tuple[str, ...]:
    """The model file and its external data files (what a load reads).

    A generated model whose scratch copy is gone is generated again (``_regenerate``)."""
    p = Path(model_path)
    if not p.is_file() and row is not None:
        p = _regenerate(row) or p
    if not p.is_file():
        raise UsageError(f"{model_path}: model file of the results store not found")
    if p.suffix == ".onnx":
        from cvmfs_modelio.campaign.experiments import external_data_files

        return (str(p), *(str(f) for f in external_data_files(p)))
    return (str(p),)


def _pattern(
    res: Results, model: str, warm: pd.DataFrame, files: tuple[str, ...], ratios: dict[str, float]
) -> LoadPattern:
    """The load pattern of the warm measurement with the median time (reads, else accesses)."""
    warm = warm.sort_values("time_to_first_inference_ns")
    mid = str(warm.iloc[len(warm) // 2]["measurement_id"])
    base = Path(files[0]).parent
    names = [os.path.relpath(f, base) for f in files]
    infos = tuple(
        FileInfo(n, os.stat(f).st_size, ratios.get(n, ratios.get("*", 1.0)))
        for n, f in zip(names, files, strict=True)
    )
    index = {n: i for i, n in enumerate(names)}
    if res.reads is not None and (res.reads["measurement_id"] == mid).any():
        r = res.reads[
            (res.reads["measurement_id"] == mid)
            & res.reads["source"].isin(["fuse-read", "fuse-open"])
        ]
        r = r.assign(file=local_names(r["file"], names))
        r = r[r["file"].isin(names)]
        t = r["t_ns"].to_numpy(dtype=np.int64)
        f = np.asarray(r["file"].map(index), dtype=np.int64)
        s = r["offset_bytes"].to_numpy(dtype=np.int64)
        e = s + r["length_bytes"].to_numpy(dtype=np.int64)
        lane = r["lane"].to_numpy(dtype=np.int64)
        is_open = (r["source"] == "fuse-open").to_numpy()
    elif res.accesses is not None and (res.accesses["measurement_id"] == mid).any():
        a = res.accesses[res.accesses["measurement_id"] == mid]
        a = a.assign(file=local_names(a["file"], names))
        a = a[a["file"].isin(names)].sort_values("first_touch_seq")
        t = a["first_touch_ns"].to_numpy(dtype=np.int64)
        f = np.asarray(a["file"].map(index), dtype=np.int64)
        s = a["chunk_offset_bytes"].to_numpy(dtype=np.int64)
        e = s + a["chunk_bytes"].to_numpy(dtype=np.int64)
        lane = (
            a["lane"].to_numpy(dtype=np.int64)
            if "lane" in a.columns
            else np.zeros(len(a), np.int64)
        )
        # a touched unchunked file was fetched at open: an open at its first touch
        is_open = np.zeros(len(a), dtype=bool)
        t = np.concatenate([t, t])
        f = np.concatenate([f, f])
        s = np.concatenate([s, s])
        e = np.concatenate([e, e])
        lane = np.concatenate([lane, lane])
        is_open = np.concatenate([np.ones(len(a), dtype=bool), is_open])
    else:
        raise UsageError(
            f"{res.path}: warm load {mid} of {model} has no access pattern (reads or accesses)"
        )
    return LoadPattern(
        model=model,
        files=infos,
        t_ns=t,
        file=f,
        start=s,
        end=e,
        lane=lane,
        is_open=is_open,
        baseline_ns=float(warm.iloc[len(warm) // 2]["time_to_first_inference_ns"]),
        end_ns=float(t.max()) if len(t) else 0.0,
    )


def local_names(stored: pd.Series, names: list[str]) -> pd.Series:
    """Store file names (repository paths such as ``/model/x.onnx.data``, or names relative
    to the model's directory) as the model-relative ``names`` they end with ("" if none)."""

    def one(path: Any) -> str:
        p = str(path)
        hits = [n for n in names if p == n or p.endswith("/" + n)]
        return max(hits, key=len) if hits else ""

    return stored.map(one)


def _ratios(res: Results, mids: set[str], names: list[str]) -> dict[str, float]:
    f = res.fetches[res.fetches["measurement_id"].isin(mids)]
    f = f[f["kind"].isin(["chunk", "whole"]) & (f["bytes"] > 0)]
    out: dict[str, float] = {}
    if len(f):
        out["*"] = float(f["compressed_bytes"].sum() / f["bytes"].sum())
    if "file" in f.columns:
        f = f.assign(file=local_names(f["file"], names))
        for name, g in f[f["file"] != ""].groupby("file"):
            out[str(name)] = float(g["compressed_bytes"].sum() / g["bytes"].sum())
    return out


def _config_of(row: Any) -> Config:
    if not bool(row["chunking"]):
        return Config(False)
    return Config.xor32(
        int(row["chunk_min_bytes"]), int(row["chunk_avg_bytes"]), int(row["chunk_max_bytes"])
    )


def build_profiles(res: Results, m: pd.DataFrame) -> dict[str, ModelProfile]:
    """One :class:`ModelProfile` per model with warm loads in ``m``."""
    out: dict[str, ModelProfile] = {}
    warm_all = m[(m["cache_state"] == "warm") & m["ok"].astype(bool)]
    for model, warm in warm_all.groupby("model"):
        model = str(model)
        files = _model_files(str(warm.iloc[0]["model_path"]), warm.iloc[0])
        path = files[0]
        mids = set(m.loc[m["model"] == model, "measurement_id"])
        names = [os.path.relpath(f, Path(files[0]).parent) for f in files]
        pattern = _pattern(res, model, warm, files, _ratios(res, mids, names))
        base: dict[tuple[bool, int, int, int], list[float]] = {}
        for _i, row in warm.iterrows():
            base.setdefault(_config_of(row).key(), []).append(
                float(row["time_to_first_inference_ns"])
            )
        out[model] = ModelProfile(
            model=model,
            family=str(warm.iloc[0]["model_family"]),
            model_bytes=int(warm.iloc[0]["model_bytes"]),
            model_path=path,
            paths=files,
            pattern=pattern,
            baseline_by_config={k: float(np.median(v)) for k, v in base.items()},
        )
    return out


def _warm_by_cell(m: pd.DataFrame) -> dict[tuple[Any, ...], float]:
    """Median warm time per cell: the paired baseline of the cell's cold loads.

    Cold and warm loads of a cell alternate in one mount, so the warm time of the same
    cell carries the machine's load at that time (this machine is shared)."""
    warm = m[(m["cache_state"] == "warm") & m["ok"].astype(bool)]
    return {
        tuple(k): float(g["time_to_first_inference_ns"].median())
        for k, g in warm.groupby(CELL_KEYS, sort=False)
    }


def _predict_cells(
    cold: pd.DataFrame,
    profiles: dict[str, ModelProfile],
    params: CostParams,
    warm: dict[tuple[Any, ...], float],
) -> pd.DataFrame:
    rows = []
    for key, g in cold.groupby(CELL_KEYS, sort=True):
        first = g.iloc[0]
        model = str(first["model"])
        if model not in profiles:
            continue
        cfg = _config_of(first)
        prof = profiles[model]
        baseline = warm.get(tuple(key), prof.baseline_ns(cfg))
        stall = simulate_stall(
            prof.touches(cfg),
            params,
            float(first["rtt_ns"]),
            float(first["bandwidth_bytes_per_s"]),
            int(first["prefetch_depth"]),
            int(first["parallel_handles"]),
        )
        rows.append(
            {
                **dict(zip(CELL_KEYS, key, strict=True)),
                "model_family": prof.family,
                "model_bytes": prof.model_bytes,
                "config": cfg.label,
                "n": len(g),
                "measured_ns": float(g["time_to_first_inference_ns"].median()),
                "measured_min_ns": float(g["time_to_first_inference_ns"].min()),
                "measured_max_ns": float(g["time_to_first_inference_ns"].max()),
                "baseline_ns": baseline,
                "paired_baseline": tuple(key) in warm,
                "stall_ns": stall,
                "predicted_ns": baseline + stall,
                "objects_fetched": float(g["objects_fetched"].median()),
                "bytes_fetched": float(g["bytes_fetched"].median()),
                "measurement_ids": list(g["measurement_id"]),
            }
        )
    return pd.DataFrame(rows)


def fit_store(
    res: Results,
    client_profile: str | None = None,
    *,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    exclude_models: tuple[str, ...] = (),
) -> CostModelFit:
    """Fit the cost model to the store's fetches and check it on its cold loads."""
    profile = choose_profile(res, client_profile)
    m = res.measurements
    m = m[(m["client_profile"] == profile) & ~m["model"].isin(exclude_models)]
    f = res.fetches_with_cells()
    f = f[(f["client_profile"] == profile) & ~f["model"].isin(exclude_models)]
    rows = fit_rows(f)
    raw = robust_fit(rows)
    alt = robust_fit(rows, form="additive")
    additive = dict(zip(PARAM_NAMES, (float(v) for v in alt.x), strict=True))
    additive["median_abs_residual_ns"] = float(np.median(np.abs(alt.residuals)))
    boot = cluster_bootstrap(rows, raw.free, n_boot, seed) if n_boot > 0 else np.zeros((0, 4))
    params = _estimates(raw, boot)
    est = CostParams.from_vector(raw.x)
    profiles = build_profiles(res, m)
    if not profiles:
        raise UsageError(f"{res.path}: no warm loads to take the models' access patterns from")
    cold = m[_clean_cold(m)]
    if cold.empty:
        raise UsageError(f"{res.path}: no clean cold loads (ok, cold_verified) to check the fit on")
    warm = _warm_by_cell(m)
    cells = _predict_cells(cold, profiles, est, warm)
    cells["cv_predicted_ns"] = np.nan
    models = sorted(set(rows["model"]))
    if len(models) >= 2:
        for mod in models:
            sub = rows[rows["model"] != mod].reset_index(drop=True)
            try:
                cv = CostParams.from_vector(robust_fit(sub, raw.free).x)
            except UsageError:
                continue
            mask = cells["model"] == mod
            if mask.any():
                cv_cells = _predict_cells(cold[cold["model"] == mod], profiles, cv, warm)
                cells.loc[mask, "cv_predicted_ns"] = cv_cells["predicted_ns"].to_numpy()
    meas = cells["measured_ns"].to_numpy()
    pred = cells["predicted_ns"].to_numpy()
    cvp = cells["cv_predicted_ns"].to_numpy()
    cells["rel_err"] = (pred - meas) / meas
    cells["cv_rel_err"] = (cvp - meas) / meas
    ok_cv = np.isfinite(cvp)
    cv_by_model = {
        str(k): float(np.median(np.abs(g["cv_rel_err"]))) for k, g in cells[ok_cv].groupby("model")
    }
    return CostModelFit(
        client_profile=profile,
        params=params,
        n_fetches=len(rows),
        fetch_r2=r_squared(rows["duration_ns"].to_numpy(dtype=np.float64), raw.fitted),
        fetch_residuals_ns=raw.residuals,
        fetch_fitted_ns=raw.fitted,
        f_scale_ns=raw.f_scale,
        bootstrap=boot,
        cells=cells,
        ttfi_r2=r_squared(meas, pred),
        cv_r2=r_squared(meas[ok_cv], cvp[ok_cv]) if ok_cv.any() else float("nan"),
        median_abs_rel_err=float(np.median(np.abs(cells["rel_err"]))),
        cv_median_abs_rel_err=(
            float(np.median(np.abs(cells.loc[ok_cv, "cv_rel_err"]))) if ok_cv.any() else math.nan
        ),
        cv_by_model=cv_by_model,
        profiles=profiles,
        n_boot=n_boot,
        seed=seed,
        store=str(res.path),
        other_profiles=[p for p in res.profiles() if p != profile],
        form=raw.form,
        additive=additive,
    )


def _estimates(raw: RawFit, boot: F64) -> dict[str, ParamEstimate]:
    out = {}
    for j, name in enumerate(PARAM_NAMES):
        fixed = not bool(raw.free[j])
        sd = math.sqrt(raw.cov[j, j]) if raw.cov[j, j] >= 0 else math.nan
        ci_j = (raw.x[j] - 1.96 * sd, raw.x[j] + 1.96 * sd) if not fixed else (raw.x[j], raw.x[j])
        if len(boot) >= 10 and not fixed:
            lo, hi = np.percentile(boot[:, j], [2.5, 97.5])
            ci_b = (float(lo), float(hi))
        else:
            ci_b = (raw.x[j], raw.x[j]) if fixed else (math.nan, math.nan)
        out[name] = ParamEstimate(
            name, float(raw.x[j]), (float(ci_j[0]), float(ci_j[1])), ci_b, PARAM_UNITS[name], fixed
        )
    return out
