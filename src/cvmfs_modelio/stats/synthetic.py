"""Results stores with a known cost: what the fits must recover (tests, examples).

:func:`make_store` writes a store in the contract's layout whose fetch durations follow the
cost model with given :class:`~cvmfs_modelio.stats.costmodel.CostParams` (plus Gaussian noise
and a fraction of gross outliers), for models that are real files on disk (random bytes, read
front to back in 128 KiB requests as the kernel's FUSE reads arrive), chunked with the
CVMFS-exact chunker.  Cold times are the warm time plus the stall the access-pattern model
computes under the true parameters, so the time-to-first-inference model can be checked too.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio.chunks.layouts import ChunkSpec, Layout, compute_layout, whole_layout
from cvmfs_modelio.stats.access import FileInfo, LoadPattern, simulate_stall, touches
from cvmfs_modelio.stats.costmodel import CostParams
from cvmfs_modelio.stats.results import SCHEMA

READ_BYTES = 128 * 1024
COMPRESSION = 0.93  # compressed/raw of random float32 weights under zlib


@dataclass(frozen=True)
class SynthModel:
    """A model file of ``size`` bytes in family ``family``; ``gap_ns`` of work per read."""

    name: str
    size: int
    family: str = "mlp"
    gap_ns: int = 200_000
    baseline_ns: int = 50_000_000


def _write_model(path: Path, size: int, seed: int) -> None:
    rng = np.random.Generator(np.random.PCG64(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 << 20)
            f.write(rng.bytes(n))
            left -= n


def _layout(path: Path, cfg: tuple[bool, int, int, int]) -> Layout:
    if not cfg[0]:
        return whole_layout(os.stat(path).st_size)
    return compute_layout(path, ChunkSpec("xor32", cfg[1], cfg[2], cfg[3]))


def _pattern(m: SynthModel) -> LoadPattern:
    n = -(-m.size // READ_BYTES)
    starts = np.arange(n, dtype=np.int64) * READ_BYTES
    t = np.concatenate([[0], 1_000_000 + np.arange(n, dtype=np.int64) * m.gap_ns])
    return LoadPattern(
        model=m.name,
        files=(FileInfo(f"{m.name}.bin", m.size, COMPRESSION),),
        t_ns=t.astype(np.int64),
        file=np.zeros(n + 1, dtype=np.int64),
        start=np.concatenate([[0], starts]).astype(np.int64),
        end=np.concatenate([[0], np.minimum(starts + READ_BYTES, m.size)]).astype(np.int64),
        lane=np.zeros(n + 1, dtype=np.int64),
        is_open=np.concatenate([[True], np.zeros(n, dtype=bool)]),
        baseline_ns=float(m.baseline_ns),
    )


def make_store(
    dest: str | os.PathLike[str],
    params: CostParams,
    models: Sequence[SynthModel],
    configs: Sequence[tuple[bool, int, int, int]],
    nets: Sequence[tuple[int, int]],
    *,
    reps: int = 3,
    noise_ns: float = 200_000.0,
    outlier_fraction: float = 0.02,
    outlier_ns: float = 50_000_000.0,
    client_profile: str = "cvmfs-2.12",
    seed: int = 0,
) -> Path:
    """Write a store to ``dest`` (``nets``: (rtt_ns, bandwidth bytes/s) pairs); returns it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(dest)
    rng = np.random.default_rng(seed)
    files = root.parent / f"{root.name}-models"
    meas: list[dict[str, Any]] = []
    fetches: list[dict[str, Any]] = []
    reads: list[dict[str, Any]] = []
    for mi, m in enumerate(models):
        path = files / m.name / f"{m.name}.bin"
        if not path.exists():
            _write_model(path, m.size, seed * 1000 + mi)
        pat = _pattern(m)
        for cfg in configs:
            lay = _layout(path, cfg)
            tch = touches(pat, [lay])
            for rtt, bw in nets:
                stall = simulate_stall(tch, params, rtt, bw)
                for rep in range(reps):
                    for state in ("cold", "warm"):
                        mid = str(uuid.uuid4())
                        base = m.baseline_ns * (1 + 0.01 * rng.standard_normal())
                        ttfi = base + (stall if state == "cold" else 0.0)
                        n_f = 0
                        if state == "cold":
                            t = 0.0
                            for seq, (_t0, cid) in enumerate(tch.lanes[0]):
                                size = int(tch.sizes[cid])
                                comp = int(tch.compressed[cid])
                                d = params.duration_ns(rtt, bw, comp, size)
                                d += noise_ns * rng.standard_normal()
                                if rng.random() < outlier_fraction:
                                    d += outlier_ns * rng.random()
                                fetches.append(
                                    {
                                        "measurement_id": mid,
                                        "seq": seq,
                                        "object": f"{cid:040x}",
                                        "kind": "chunk" if lay.chunked else "whole",
                                        "compressed_bytes": comp,
                                        "bytes": size,
                                        "start_ns": int(t),
                                        "duration_ns": max(1, int(d)),
                                        "thread": 1,
                                        "rtt_ns": rtt,
                                        "bandwidth_bytes_per_s": bw,
                                        "client_profile": client_profile,
                                        "file": f"{m.name}.bin",
                                    }
                                )
                                t += max(1.0, d) + 1000.0
                                n_f += 1
                        else:
                            for i in range(len(pat.t_ns)):
                                reads.append(
                                    {
                                        "measurement_id": mid,
                                        "source": "fuse-open" if pat.is_open[i] else "fuse-read",
                                        "file": f"{m.name}.bin",
                                        "offset_bytes": int(pat.start[i]),
                                        "length_bytes": int(pat.end[i] - pat.start[i]),
                                        "t_ns": int(pat.t_ns[i]),
                                        "duration_ns": 10_000,
                                        "lane": 1,
                                    }
                                )
                        meas.append(
                            _row(mid, m, str(path), cfg, rtt, bw, rep, state, client_profile)
                            | {
                                "time_to_first_inference_ns": int(ttfi),
                                "session_ns": int(ttfi * 0.9),
                                "first_inference_ns": int(ttfi) - int(ttfi * 0.9),
                                "objects_fetched": n_f,
                                "bytes_fetched": int(tch.bytes_fetched()) if n_f else 0,
                                "chunks_total": lay.n_chunks,
                                "chunks_touched": tch.n_fetches,
                            }
                        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "store.json").write_text(
        json.dumps({"schema": SCHEMA, "campaign": {"name": "synthetic"}, "created_utc": "-"})
    )
    for name, rows in (("measurements", meas), ("fetches", fetches), ("reads", reads)):
        (root / name).mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / name / "part-0.parquet")
    return root


def _row(
    mid: str,
    m: SynthModel,
    path: str,
    cfg: tuple[bool, int, int, int],
    rtt: int,
    bw: int,
    rep: int,
    state: str,
    profile: str,
) -> dict[str, Any]:
    return {
        "measurement_id": mid,
        "cell_key": f"{m.name}-{cfg}-{rtt}-{bw}-{state}",
        "rep": rep,
        "campaign": "synthetic",
        "created_utc": "-",
        "model": m.name,
        "model_path": path,
        "model_family": m.family,
        "model_format": "bin",
        "model_bytes": m.size,
        "target": "emulated",
        "chunking": cfg[0],
        "chunk_min_bytes": cfg[1],
        "chunk_avg_bytes": cfg[2],
        "chunk_max_bytes": cfg[3],
        "chunk_label": "x",
        "rtt_ns": rtt,
        "bandwidth_bytes_per_s": bw,
        "client_profile": profile,
        "prefetch_depth": 0,
        "parallel_handles": 16,
        "cache_state": state,
        "loader": "probe-seq",
        "executor": "local",
        "ok": True,
        "error": "",
        "wall_ns": 0,
        "bytes_requested": m.size,
        "fuse_reads": 0,
        "cold_verified": state == "cold",
        "environment_json": "{}",
        "hostname": "synthetic",
    }
