"""Closed-loop validation: measure what a recommendation predicts, on unseen models and RTTs.

For every family answer, models not used in the fit are published with the recommended
configuration (and, to check the predicted gain, with the defaults), served behind the WAN
emulator at RTTs the fit did not use, and loaded cold and warm.  The prediction for each cold
cell takes the model's compute time and access pattern from its own warm loads (client cache
full: no network) and everything the network costs from the fit (no refit): predicted vs
measured, the median and worst absolute relative error, and every cell.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.stats.fit import (
    DEFAULT_CONFIG,
    Config,
    CostModelFit,
    _clean_cold,
    _predict_cells,
    _warm_by_cell,
    build_profiles,
)
from cvmfs_modelio.stats.recommend import Recommendation
from cvmfs_modelio.stats.results import load_results

TARGET_MEDIAN_ERROR = 0.10
DEFAULT_VALIDATION_RTTS_MS = (10.0, 40.0)


@dataclass(frozen=True)
class ValidationModel:
    """A model file to validate on and the family whose answer it checks."""

    path: str
    family: str


@dataclass
class Validation:
    """Predicted against measured time to first inference on unseen models and RTTs."""

    cells: pd.DataFrame  # model, family, config, rtt_ns, measured_ns, predicted_ns, rel_err
    median_abs_rel_err: float
    worst_abs_rel_err: float
    worst_cell: dict[str, Any]
    rtts_ns: list[int]
    models: list[str]
    store: str
    client_profile: str

    @property
    def meets_target(self) -> bool:
        return self.median_abs_rel_err <= TARGET_MEDIAN_ERROR

    def to_dict(self) -> dict[str, Any]:
        cols = [
            "model",
            "model_family",
            "config",
            "rtt_ns",
            "bandwidth_bytes_per_s",
            "n",
            "measured_ns",
            "predicted_ns",
            "rel_err",
        ]
        return {
            "median_abs_rel_err": self.median_abs_rel_err,
            "worst_abs_rel_err": self.worst_abs_rel_err,
            "target_median_abs_rel_err": TARGET_MEDIAN_ERROR,
            "meets_target": self.meets_target,
            "worst_cell": self.worst_cell,
            "rtts_ns": self.rtts_ns,
            "models": self.models,
            "store": self.store,
            "client_profile": self.client_profile,
            "cells": self.cells[cols].to_dict(orient="records"),
        }


def default_models(workdir: Path, fit: CostModelFit) -> list[ValidationModel]:
    """Synthetic models of sizes the fit has not seen (embedded and external data)."""
    from cvmfs_modelio.models.synthetic import make_model

    fams = {p.family for p in fit.profiles.values()}
    fam = "mlp" if "mlp" in fams else sorted(fams)[0]
    sizes = {p.model_bytes for p in fit.profiles.values()}
    out = []
    for name, size, ext, seed in (
        ("val-ext", 32 << 20, True, 101),
        ("val-emb", 48 << 20, False, 102),
    ):
        while any(abs(size - s) < (2 << 20) for s in sizes):
            size += 4 << 20
        m = make_model(workdir / name / f"{name}.onnx", size, external_data=ext, seed=seed)
        out.append(ValidationModel(str(m.onnx), fam))
    return out


def validation_spec(
    fit: CostModelFit,
    rec: Recommendation,
    models: Sequence[tuple[str, str, str]],
    family: str,
    rtts_ms: Sequence[float],
    reps: int,
    with_defaults: bool = True,
) -> Any:
    """The campaign (``campaign.spec.CampaignSpec``) that validates ``family``'s answer:
    ``models`` ((name, path, family) of files not in the fit) with the recommended
    configuration (and the defaults) at ``rtts_ms``, cold then warm, ONNX Runtime."""
    from cvmfs_modelio.campaign.spec import CampaignSpec, Matrix, TargetSpec
    from cvmfs_modelio.campaign.spec import ModelSpec as CampaignModel

    answers = {a.family: a for a in rec.families}
    best = answers[family].best
    configs = [best] + ([DEFAULT_CONFIG] if with_defaults and best != DEFAULT_CONFIG else [])
    sc = rec.scenario
    return CampaignSpec(
        name="validation",
        description=f"validates {fit.store} ({rec.objective})",
        models=tuple(
            CampaignModel(n, "file", Path(p).resolve(), {}, fam)
            for n, p, fam in models
            if fam == family
        ),
        target=TargetSpec("emulated"),
        matrix=Matrix(
            chunking=tuple(_chunk_config(c) for c in configs),
            rtt_ms=tuple(float(r) for r in rtts_ms),
            bandwidth=(int(sc.bandwidth),),
            prefetch=(int(sc.prefetch),),
            parallel=(16,),
            client_profile=(fit.client_profile,),
            cache=("cold", "warm"),
            loader=("ort",),
        ),
        reps=reps,
    )


class _SayProgress:
    """``campaign.runner.Progress`` for a one-line-per-message callable."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def begin(self, total: int) -> None:
        self.say(f"validation: measuring {total} repetitions")

    def status(self, text: str) -> None:
        self.say(f"validation: {text}")

    def advance(self) -> None:
        pass

    def note(self, text: str) -> None:
        self.say(text)


def validate(
    fit: CostModelFit,
    rec: Recommendation,
    models: Sequence[ValidationModel] | None = None,
    rtts_ms: Sequence[float] = DEFAULT_VALIDATION_RTTS_MS,
    *,
    reps: int = 3,
    with_defaults: bool = True,
    store: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | Any = None,
    workdir: str | os.PathLike[str] | None = None,
) -> Validation:
    """Measure and compare (see module docstring); ``store`` keeps the validation store.

    The measurements are a campaign of their own run by the campaign runner
    (``campaign.execute``) into a results store; ``progress`` is a ``Progress`` object of
    the runner or a callable taking one line."""
    from cvmfs_modelio.campaign.execute import execute
    from cvmfs_modelio.campaign.experiments import model_from_path, unique_names

    fitted_rtts = {int(r) for r in fit.cells["rtt_ns"].unique()}
    rtts = [r for r in rtts_ms if round(r * 1e6) not in fitted_rtts]
    if not rtts:
        raise UsageError("--validate-rtt: every RTT given was used in the fit; give others")
    if store is not None and Path(store).exists():
        raise UsageError(f"--validate-store {store}: exists (give a new directory)")
    say: Any = (
        progress if progress is None or hasattr(progress, "status") else _SayProgress(progress)
    )
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-validate-", dir=workdir) as tmp:
        work = Path(tmp)
        # a kept store keeps its models beside it (its rows name their files)
        mdir = work if store is None else Path(store).parent / f"{Path(store).name}-models"
        vms = list(models) if models else default_models(mdir, fit)
        files = unique_names([model_from_path(v.path) for v in vms])
        seen = [f.name for f in files if f.name in fit.profiles]
        if seen:
            raise UsageError(f"--validate-model {seen[0]}: this model was used in the fit")
        answers = {a.family: a for a in rec.families}
        for v in vms:
            if v.family not in answers:
                raise UsageError(
                    f"--validate-model {v.path}: family {v.family!r} has no answer in the "
                    f"recommendation ({', '.join(sorted(answers))})"
                )
        named = [(f.name, str(f.onnx), v.family) for f, v in zip(files, vms, strict=True)]
        dest = Path(store) if store is not None else work / "validation-store"
        for fam in sorted({v.family for v in vms}):
            spec = validation_spec(fit, rec, named, fam, rtts, reps, with_defaults)
            execute(spec, dest, resume=True, workdir=workdir, progress=say)
        res = load_results(dest)
        m = res.measurements
        if fit.client_profile not in set(m["client_profile"]):
            raise UsageError(
                f"validation measured client profile {sorted(set(m['client_profile']))}, the fit "
                f"is for {fit.client_profile}: they cannot be compared"
            )
        profiles = build_profiles(res, m)
        cold = m[_clean_cold(m)]
        cells_df = _predict_cells(cold, profiles, fit.estimate, _warm_by_cell(m))
    if cells_df.empty:
        raise UsageError("validation: no clean cold loads were measured")
    cells_df["rel_err"] = (cells_df["predicted_ns"] - cells_df["measured_ns"]) / cells_df[
        "measured_ns"
    ]
    abs_err = np.abs(cells_df["rel_err"].to_numpy())
    worst = int(np.argmax(abs_err))
    w = cells_df.iloc[worst]
    return Validation(
        cells=cells_df,
        median_abs_rel_err=float(np.median(abs_err)),
        worst_abs_rel_err=float(abs_err[worst]),
        worst_cell={
            "model": str(w["model"]),
            "config": str(w["config"]),
            "rtt_ns": int(w["rtt_ns"]),
            "measured_ns": float(w["measured_ns"]),
            "predicted_ns": float(w["predicted_ns"]),
        },
        rtts_ns=[round(r * 1e6) for r in rtts],
        models=[f.name for f in files],
        store=str(dest) if store is not None else "",
        client_profile=fit.client_profile,
    )


def _chunk_config(c: Config) -> Any:
    from cvmfs_modelio.campaign.experiments import ChunkConfig

    return (
        ChunkConfig.chunked(c.min_size, c.avg_size, c.max_size)
        if c.chunking
        else ChunkConfig.whole()
    )
