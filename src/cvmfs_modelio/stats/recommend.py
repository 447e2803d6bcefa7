"""Chunk-size recommendations from a :class:`~cvmfs_modelio.stats.fit.CostModelFit`.

For every model family in the fit, each candidate configuration (unchunked, and CVMFS xor32
with the default min:avg:max proportions 1:2:4 at avg 1 MiB .. 64 MiB) is scored by the
objective:

- ``cold-start``: predicted cold time to first inference (the fit's access-pattern model),
  each model relative to its time under the defaults (4/8/16 MiB), averaged over the family;
- ``bytes``: compressed bytes a cold load fetches (chunks touched);
- ``storage``: compressed bytes the family's files occupy in the store (identical chunks
  stored once);
- ``update``: compressed bytes a client holding one version of a model fetches for the next
  (version series: models whose names differ only in a trailing version, e.g. ``V00``/``V01``);
- ``weighted``: a weighted sum of the above, each relative to the defaults.

Intervals: the argmin is recomputed under every bootstrap parameter vector of the fit, and
the 2.5-97.5 percentiles of the chosen min/avg/max are the 95% interval of the recommendation
(an objective that does not depend on the fitted costs has none).  Nothing here fits.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.stats import OBJECTIVES
from cvmfs_modelio.stats.costmodel import CostParams
from cvmfs_modelio.stats.fit import DEFAULT_CONFIG, Config, CostModelFit, ModelProfile

MiB = 1 << 20
DEFAULT_WEIGHTS = {"cold-start": 1.0, "bytes": 0.25, "storage": 0.25, "update": 0.25}
AVG_CANDIDATES = tuple(a * MiB for a in (1, 2, 4, 8, 16, 32, 64))
RTT_GRID_NS = tuple(int(x * 1e6) for x in (0.5, 1, 2, 5, 10, 20, 50, 100, 200))
BANDWIDTH_GRID = (*(b * MiB for b in (10, 25, 50, 100, 250, 1000)), 0)
PREFETCH_DEPTHS = (0, 1, 2, 4, 8, 16)
CACHE_QUOTA_BYTES = 4000 * 1000 * 1000  # cvmfs2 default CVMFS_QUOTA_LIMIT (4000 MB)
SQUID_MAX_OBJECT_BYTES = 4 * 1000 * 1000  # squid's default maximum_object_size (4 MB)
TIE = 0.01  # relative difference below which two configurations are "the same"


def candidates() -> list[Config]:
    """Unchunked plus xor32 ``avg/2 / avg / 2 avg`` for avg 1 MiB .. 64 MiB."""
    return [Config(False)] + [Config.xor32(a // 2, a, 2 * a) for a in AVG_CANDIDATES]


@dataclass(frozen=True)
class Scenario:
    """Where the recommendation is for: RTT (ns), bandwidth (bytes/s, 0 unlimited), client."""

    rtt_ns: int
    bandwidth: int
    prefetch: int = 0
    parallel: int = 16

    def label(self) -> str:
        bw = units.fmt_rate(self.bandwidth) if self.bandwidth else "unlimited"
        pf = f", client prefetch {self.prefetch}" if self.prefetch else ""
        return f"RTT {self.rtt_ns / 1e6:g} ms, {bw}{pf}"


@dataclass
class FamilyAnswer:
    """The recommendation for one model family."""

    family: str
    models: list[str]
    objective: str
    kind: str  # "config" | "unchunked" | "chunking-irrelevant"
    best: Config
    interval: dict[str, tuple[int, int]] | None  # min/avg/max 95% interval (bytes)
    scores: dict[str, float]  # candidate label -> objective (relative to defaults)
    predicted_ns: dict[str, float]  # model -> predicted cold TTFI under best (ns)
    default_ns: dict[str, float]  # model -> predicted cold TTFI under defaults (ns)
    gain: float  # mean relative saving of the objective over the defaults (0.2 = 20%)
    gain_ci: tuple[float, float] | None
    gain_ns: float  # mean time saved per cold load over the defaults (ns)
    rtt_sweep: list[tuple[int, str]]  # (rtt_ns, best label)
    break_even_rtt_ns: list[tuple[float, str, str]]  # (rtt, below, above)
    bandwidth_sweep: list[tuple[int, str]]
    prefetch: list[dict[str, Any]]  # per depth: predicted TTFI (defaults, best), saving
    below_min: list[str]  # models whose every file is <= min of the best configuration
    notes: list[str] = field(default_factory=list)

    def server_conf(self) -> list[str]:
        """The ``server.conf`` lines (with the interval as a comment)."""
        if self.kind == "chunking-irrelevant":
            return [
                "# chunking cannot matter for these files (each is below the minimum chunk size)"
            ]
        if not self.best.chunking:
            return ["CVMFS_USE_FILE_CHUNKING=false"]
        out = []
        for name, value in (
            ("MIN", self.best.min_size),
            ("AVG", self.best.avg_size),
            ("MAX", self.best.max_size),
        ):
            iv = self.interval.get(name.lower()) if self.interval else None
            comment = (
                f"  # 95% interval {units.fmt_bytes(iv[0])} .. {units.fmt_bytes(iv[1])}"
                if iv
                else ""
            )
            out.append(f"CVMFS_{name}_CHUNK_SIZE={value}{comment}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "models": self.models,
            "objective": self.objective,
            "kind": self.kind,
            "best": {
                "label": self.best.label,
                "chunking": self.best.chunking,
                "min_bytes": self.best.min_size,
                "avg_bytes": self.best.avg_size,
                "max_bytes": self.best.max_size,
            },
            "server_conf": self.server_conf(),
            "interval95_bytes": {k: list(v) for k, v in (self.interval or {}).items()},
            "scores_relative_to_default": self.scores,
            "predicted_ns": self.predicted_ns,
            "default_predicted_ns": self.default_ns,
            "gain_over_default": self.gain,
            "gain_over_default_ci95": list(self.gain_ci) if self.gain_ci else None,
            "gain_ns": self.gain_ns,
            "rtt_sweep": [{"rtt_ns": r, "best": b} for r, b in self.rtt_sweep],
            "break_even_rtt_ns": [
                {"rtt_ns": r, "below": lo, "above": hi} for r, lo, hi in self.break_even_rtt_ns
            ],
            "bandwidth_sweep": [
                {"bandwidth_bytes_per_s": b, "best": lab} for b, lab in self.bandwidth_sweep
            ],
            "prefetch": self.prefetch,
            "below_min": self.below_min,
            "notes": self.notes,
        }


@dataclass
class Recommendation:
    """Answers per family for one objective and scenario, from one fit."""

    objective: str
    scenario: Scenario
    client_profile: str
    families: list[FamilyAnswer]
    weights: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "rtt_ns": self.scenario.rtt_ns,
            "bandwidth_bytes_per_s": self.scenario.bandwidth,
            "prefetch_depth": self.scenario.prefetch,
            "client_profile": self.client_profile,
            "weights": self.weights,
            "families": [f.to_dict() for f in self.families],
        }


# ------------------------------------------------------------------ objectives


def _cold(
    fit: CostModelFit,
    prof: ModelProfile,
    cfg: Config,
    sc: Scenario,
    params: CostParams | None = None,
) -> float:
    return fit.predict_ns(
        prof.model, cfg, sc.rtt_ns, sc.bandwidth, sc.prefetch, sc.parallel, params
    )


def _bytes(prof: ModelProfile, cfg: Config) -> float:
    return prof.touches(cfg).bytes_fetched()


def _chunk_digests(prof: ModelProfile, cfg: Config) -> list[tuple[str, float]]:
    """(sha1 of the raw chunk, compressed size estimate) of every chunk of the model."""
    out = []
    for path, lay, fi in zip(prof.paths, prof.layouts(cfg), prof.pattern.files, strict=True):
        with open(path, "rb") as f:
            for off, size in zip(lay.offsets.tolist(), lay.sizes.tolist(), strict=True):
                f.seek(off)
                out.append(
                    (hashlib.sha1(f.read(size)).hexdigest(), float(size) * fi.compression_ratio)
                )
    return out


def storage_bytes(profs: Sequence[ModelProfile], cfg: Config) -> float:
    """Compressed bytes (estimated) the models occupy under ``cfg``, identical chunks once."""
    seen: dict[str, float] = {}
    for p in profs:
        for h, c in _chunk_digests(p, cfg):
            seen.setdefault(h, c)
    return float(sum(seen.values()))


_VERSION = re.compile(r"^(?P<base>.*?)[-_.]?v?(?P<ver>\d+)$", re.IGNORECASE)


def version_series(models: Sequence[str]) -> list[list[str]]:
    """Models grouped by name without a trailing version (``x-V00``, ``x-V01``), sorted."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for m in models:
        mt = _VERSION.match(m)
        if mt is None:
            continue
        groups.setdefault(mt["base"], []).append((int(mt["ver"]), m))
    return [[m for _v, m in sorted(g)] for g in groups.values() if len(g) >= 2]


def _update(profs: dict[str, ModelProfile], series: list[list[str]], cfg: Config) -> float:
    total = 0.0
    for s in series:
        for old, new in itertools.pairwise(s):
            held = {h for h, _c in _chunk_digests(profs[old], cfg)}
            total += sum(c for h, c in _chunk_digests(profs[new], cfg) if h not in held)
    return total


# ------------------------------------------------------------------ the recommendation


def recommend(
    fit: CostModelFit,
    objective: str = "cold-start",
    scenario: Scenario | None = None,
    *,
    weights: dict[str, float] | None = None,
    families: Sequence[str] | None = None,
    with_sweeps: bool = True,
) -> Recommendation:
    """Best configuration per model family (see module docstring)."""
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    sc = scenario or Scenario(10_000_000, 100 * MiB)
    by_family: dict[str, list[ModelProfile]] = {}
    for prof in fit.profiles.values():
        by_family.setdefault(prof.family, []).append(prof)
    if families:
        unknown = [f for f in families if f not in by_family]
        if unknown:
            raise UsageError(
                f"--family {unknown[0]}: not in the fit ({', '.join(sorted(by_family))})"
            )
        by_family = {f: by_family[f] for f in families}
    w = dict(weights or DEFAULT_WEIGHTS) if objective == "weighted" else {objective: 1.0}
    answers = [
        _family_answer(
            fit, fam, sorted(profs, key=lambda p: p.model), objective, w, sc, with_sweeps
        )
        for fam, profs in sorted(by_family.items())
    ]
    return Recommendation(objective, sc, fit.client_profile, answers, w)


def _scores(
    fit: CostModelFit,
    profs: list[ModelProfile],
    cands: list[Config],
    w: dict[str, float],
    sc: Scenario,
    params: CostParams | None,
    fixed_parts: dict[str, dict[str, float]],
) -> dict[str, float]:
    """Objective of each candidate, relative to the defaults (1.0 = as the defaults)."""
    out: dict[str, float] = {}
    default_cold = None
    if "cold-start" in w:
        default_cold = [_cold(fit, p, DEFAULT_CONFIG, sc, params) for p in profs]
    for c in cands:
        total = 0.0
        for part, weight in w.items():
            if part == "cold-start":
                assert default_cold is not None
                rel = float(
                    np.mean(
                        [
                            _cold(fit, p, c, sc, params) / d
                            for p, d in zip(profs, default_cold, strict=True)
                        ]
                    )
                )
            else:
                base = fixed_parts[part][DEFAULT_CONFIG.label]
                rel = fixed_parts[part][c.label] / base if base > 0 else 1.0
            total += weight * rel
        out[c.label] = total / sum(w.values())
    return out


def _fixed_parts(
    profs: list[ModelProfile], cands: list[Config], w: dict[str, float], objective: str
) -> dict[str, dict[str, float]]:
    parts: dict[str, dict[str, float]] = {}
    allc = [*cands, DEFAULT_CONFIG]
    if "bytes" in w:
        parts["bytes"] = {c.label: sum(_bytes(p, c) for p in profs) for c in allc}
    if "storage" in w:
        parts["storage"] = {c.label: storage_bytes(profs, c) for c in allc}
    if "update" in w:
        series = version_series([p.model for p in profs])
        if not series:
            if objective == "update":
                raise UsageError(
                    "--objective update: no model version series in this family "
                    "(models named like NAME-V00, NAME-V01)"
                )
            w.pop("update")
        else:
            pmap = {p.model: p for p in profs}
            parts["update"] = {c.label: _update(pmap, series, c) for c in allc}
    return parts


def _argmin(scores: dict[str, float], cands: list[Config]) -> Config:
    best = min(scores.values())
    # among the near-ties prefer the candidate listed first (unchunked, then small avg):
    # fewer and simpler objects when the objective cannot tell them apart
    for c in cands:
        if scores[c.label] <= best * (1 + 1e-9):
            return c
    raise AssertionError("unreachable")


def _family_answer(
    fit: CostModelFit,
    family: str,
    profs: list[ModelProfile],
    objective: str,
    weights: dict[str, float],
    sc: Scenario,
    with_sweeps: bool,
) -> FamilyAnswer:
    w = dict(weights)
    notes: list[str] = []
    cands = candidates()
    largest = max(p.model_bytes for p in profs)
    biggest_file = max(fi.size for p in profs for fi in p.pattern.files)
    if biggest_file > CACHE_QUOTA_BYTES // 2:
        cands = [c for c in cands if c.chunking]
        notes.append(
            f"files up to {units.fmt_bytes(biggest_file)}: above half the default client cache "
            f"quota ({units.fmt_bytes(CACHE_QUOTA_BYTES // 2)}), an unchunked file cannot be "
            "cached at all: unchunked is not a candidate"
        )
    fixed = _fixed_parts(profs, cands, w, objective)
    scores = _scores(fit, profs, cands, w, sc, None, fixed)
    best = _argmin(scores, cands)
    default_ns = {p.model: _cold(fit, p, DEFAULT_CONFIG, sc) for p in profs}
    pred_ns = {p.model: _cold(fit, p, best, sc) for p in profs}
    gain = 1.0 - scores[best.label] / scores[DEFAULT_CONFIG.label]
    gain_ns = float(np.mean([default_ns[m] - pred_ns[m] for m in default_ns]))
    interval: dict[str, tuple[int, int]] | None = None
    gain_ci: tuple[float, float] | None = None
    if "cold-start" in w and len(fit.bootstrap):
        chosen: list[Config] = []
        gains: list[float] = []
        for b in _subsample(fit.bootstrap, 100):
            bs = _scores(fit, profs, cands, w, sc, CostParams.from_vector(b), fixed)
            c = _argmin(bs, cands)
            chosen.append(c)
            gains.append(1.0 - bs[best.label] / bs[DEFAULT_CONFIG.label])
        interval = _interval(chosen)
        lo, hi = np.percentile(gains, [2.5, 97.5])
        gain_ci = (float(lo), float(hi))
    # a file no larger than min is stored whole whatever avg/max say
    below = [p.model for p in profs if p.below_min(best if best.chunking else DEFAULT_CONFIG)]
    below_default = [p.model for p in profs if p.below_min(DEFAULT_CONFIG)]
    kind = "config" if best.chunking else "unchunked"
    if len(below_default) == len(profs) and (
        not best.chunking or all(p.below_min(best) for p in profs)
    ):
        kind = "chunking-irrelevant"
        notes.append(
            f"every model is at most {units.fmt_bytes(biggest_file)} per file, below the "
            f"default CVMFS_MIN_CHUNK_SIZE ({units.fmt_bytes(DEFAULT_CONFIG.min_size)}): CVMFS "
            "stores each file whole and fetches it at open(); chunking cannot matter for these "
            "files"
        )
    spread = max(scores.values()) - min(scores.values())
    if spread < TIE and kind != "chunking-irrelevant":
        notes.append(
            f"every candidate is within {100 * TIE:.0f}% of the best for this objective: "
            "the choice is within noise"
        )
    if best.chunking and best.max_size > SQUID_MAX_OBJECT_BYTES:
        notes.append(
            f"max chunk {units.fmt_bytes(best.max_size)} exceeds squid's default "
            f"maximum_object_size (4 MB): set maximum_object_size >= {best.max_size} bytes on "
            "site proxies or they will not cache these chunks"
        )
    if largest > 2 * 1000**3:
        notes.append(
            "models above 2 GB: the CVMFS maintainers discourage such files; keep them chunked "
            "so no single object approaches the cache quota"
        )
    rtt_sweep: list[tuple[int, str]] = []
    breaks: list[tuple[float, str, str]] = []
    bw_sweep: list[tuple[int, str]] = []
    prefetch: list[dict[str, Any]] = []
    if with_sweeps and "cold-start" in w:
        rtt_sweep, breaks = _rtt_sweep(fit, profs, cands, w, sc, fixed)
        for bw in BANDWIDTH_GRID:
            s2 = Scenario(sc.rtt_ns, bw, sc.prefetch, sc.parallel)
            bw_sweep.append(
                (bw, _argmin(_scores(fit, profs, cands, w, s2, None, fixed), cands).label)
            )
        prefetch = _prefetch(fit, profs, best, sc)
    return FamilyAnswer(
        family=family,
        models=[p.model for p in profs],
        objective=objective,
        kind=kind,
        best=best,
        interval=interval if best.chunking else None,
        scores=scores,
        predicted_ns=pred_ns,
        default_ns=default_ns,
        gain=gain,
        gain_ci=gain_ci,
        gain_ns=gain_ns,
        rtt_sweep=rtt_sweep,
        break_even_rtt_ns=breaks,
        bandwidth_sweep=bw_sweep,
        prefetch=prefetch,
        below_min=below,
        notes=notes,
    )


def _subsample(boot: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    if len(boot) <= n:
        return boot
    idx = np.linspace(0, len(boot) - 1, n).round().astype(int)
    out: npt.NDArray[np.float64] = boot[idx]
    return out


def _interval(chosen: list[Config]) -> dict[str, tuple[int, int]] | None:
    chunked = [c for c in chosen if c.chunking]
    if not chunked:
        return None
    out = {}
    for name in ("min", "avg", "max"):
        vals = np.array([getattr(c, f"{name}_size") for c in chunked], dtype=np.float64)
        lo, hi = np.percentile(vals, [2.5, 97.5])
        out[name] = (int(lo), int(hi))
    return out


def _rtt_sweep(
    fit: CostModelFit,
    profs: list[ModelProfile],
    cands: list[Config],
    w: dict[str, float],
    sc: Scenario,
    fixed: dict[str, dict[str, float]],
) -> tuple[list[tuple[int, str]], list[tuple[float, str, str]]]:
    def at(rtt: float) -> dict[str, float]:
        return _scores(
            fit,
            profs,
            cands,
            w,
            Scenario(int(rtt), sc.bandwidth, sc.prefetch, sc.parallel),
            None,
            fixed,
        )

    sweep = [(r, _argmin(at(r), cands).label) for r in RTT_GRID_NS]
    breaks: list[tuple[float, str, str]] = []
    for (r0, b0), (r1, b1) in itertools.pairwise(sweep):
        if b0 == b1:
            continue
        lo, hi = float(r0), float(r1)
        for _ in range(30):  # bisect on which of the two wins
            mid = math.sqrt(lo * hi)
            s = at(mid)
            if s[b0] <= s[b1]:
                lo = mid
            else:
                hi = mid
            if hi / lo < 1.01:
                break
        breaks.append((math.sqrt(lo * hi), b0, b1))
    return sweep, breaks


def _prefetch(
    fit: CostModelFit, profs: list[ModelProfile], best: Config, sc: Scenario
) -> list[dict[str, Any]]:
    out = []
    base_def = [_cold(fit, p, DEFAULT_CONFIG, Scenario(sc.rtt_ns, sc.bandwidth, 0)) for p in profs]
    small = Config.xor32(MiB // 2, MiB, 2 * MiB)
    base_small = [_cold(fit, p, small, Scenario(sc.rtt_ns, sc.bandwidth, 0)) for p in profs]
    unchunked = [_cold(fit, p, Config(False), Scenario(sc.rtt_ns, sc.bandwidth, 0)) for p in profs]
    for d in PREFETCH_DEPTHS:
        s2 = Scenario(sc.rtt_ns, sc.bandwidth, d, sc.parallel)
        t_def = [_cold(fit, p, DEFAULT_CONFIG, s2) for p in profs]
        t_small = [_cold(fit, p, small, s2) for p in profs]
        out.append(
            {
                "depth": d,
                "default_ns": float(np.mean(t_def)),
                "default_saving": float(
                    np.mean([1 - t / b for t, b in zip(t_def, base_def, strict=True)])
                ),
                "small_chunks": small.label,
                "small_ns": float(np.mean(t_small)),
                "small_saving": float(
                    np.mean([1 - t / b for t, b in zip(t_small, base_small, strict=True)])
                ),
                "unchunked_ns": float(np.mean(unchunked)),
            }
        )
    return out
