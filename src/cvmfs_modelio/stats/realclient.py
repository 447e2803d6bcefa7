"""The per-object cost of the real cvmfs2 client, fitted from its recorded cold loads.

``shared/testvectors/cvmfs-timing/cold-real-vs-emulated.json`` holds cold-load times of the
same workloads (same bytes, same chunking, same WAN emulator) through a real cvmfs2 2.12 client
and through ``cmio-simfs``, at RTT 0/10/25 ms.  Per side and workload,

    seconds = base[workload] + objects[workload] * (extra_per_object[side] + rtt_factor[side] * rtt)

with ``base`` shared by both sides (what the workload costs besides fetching objects) and
``extra_per_object`` of the emulated side 0 (the reference): the fit says how much more the real
client pays per object and per RTT.  Robust least squares (soft_l1) on every repetition;
intervals from a bootstrap over repetitions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.core.errors import UsageError

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RealClientFit:
    """Extra per-object cost of the real client over the emulated one (ns), RTT factors."""

    path: str
    extra_per_object_ns: float
    extra_per_object_ci: tuple[float, float]
    rtt_factor: dict[str, float]
    rtt_factor_ci: dict[str, tuple[float, float]]
    ratio_by_cell: list[dict[str, Any]]  # rtt, workload, objects, real/emulated medians
    n_runs: int

    def summary(self) -> str:
        lo, hi = self.extra_per_object_ci
        rf = ", ".join(
            f"{side} {v:.2f} [{self.rtt_factor_ci[side][0]:.2f}, {self.rtt_factor_ci[side][1]:.2f}]"
            for side, v in sorted(self.rtt_factor.items())
        )
        return (
            f"real cvmfs2 2.12 vs emulated ({self.n_runs} cold loads, {self.path}): the real "
            f"client pays {self.extra_per_object_ns / 1e6:+.2f} ms per object "
            f"[{lo / 1e6:+.2f}, {hi / 1e6:+.2f}] more; RTTs per object: {rf}"
        )


def _design(runs: list[dict[str, Any]], workloads: list[str], objects: dict[str, int]) -> F64:
    rows = []
    for r in runs:
        n = objects[r["workload"]]
        real = r["side"] == "real"
        rtt = float(r["rtt_ms"])  # ms: the fit runs in ms
        base = [1.0 if r["workload"] == w else 0.0 for w in workloads]
        rows.append([*base, n * real, n * rtt * (not real), n * rtt * real])
    return np.array(rows, dtype=np.float64)


def _solve(a: F64, y: F64) -> F64:
    from scipy.optimize import least_squares

    x0, *_ = np.linalg.lstsq(a, y, rcond=None)
    r = a @ x0 - y
    f_scale = max(float(np.median(np.abs(r - np.median(r)))) * 1.4826, 1e-3)
    res = least_squares(lambda x: a @ x - y, x0, loss="soft_l1", f_scale=f_scale)
    return np.asarray(res.x, dtype=np.float64)


def fit_real_client(
    path: str | os.PathLike[str], n_boot: int = 200, seed: int = 0
) -> RealClientFit:
    """Fit the recorded real-vs-emulated cold loads at ``path`` (see module docstring)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
        # the recording calls the emulated side "sim"
        runs = [r for r in doc["runs"] if r["side"] in ("real", "sim", "emulated")]
        objects = {k: int(v["objects_fetched_cold"]) for k, v in doc["workloads"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{p}: not a real-vs-emulated timing record ({e})") from None
    workloads = sorted(objects)
    a = _design(runs, workloads, objects)
    y = np.array([float(r["seconds"]) * 1e3 for r in runs])  # ms
    x = _solve(a, y)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(runs), len(runs))
        boot.append(_solve(a[idx], y[idx]))
    b = np.array(boot)
    k = len(workloads)

    def ci(j: int, scale: float) -> tuple[float, float]:
        lo, hi = np.percentile(b[:, j], [2.5, 97.5])
        return (float(lo) * scale, float(hi) * scale)

    cells = []
    for s in doc.get("summary", []):
        cells.append(
            {
                "rtt_ms": s["rtt_ms"],
                "workload": s["workload"],
                "objects": objects.get(s["workload"]),
                "real_s": s["real_median_s"],
                "emulated_s": s["emulated_median_s"],
                "emulated_over_real": s["emulated_over_real"],
            }
        )
    return RealClientFit(
        path=str(p),
        extra_per_object_ns=float(x[k]) * 1e6,  # ms -> ns
        extra_per_object_ci=ci(k, 1e6),
        rtt_factor={"emulated": float(x[k + 1]), "real": float(x[k + 2])},
        rtt_factor_ci={"emulated": ci(k + 1, 1.0), "real": ci(k + 2, 1.0)},
        ratio_by_cell=cells,
        n_runs=len(runs),
    )
