"""The probe against fio on the same file and patterns, page cache warm and cold.

Patterns: sequential 1 MiB pread (fio psync), random 4 KiB pread (fio psync), mmap random
4 KiB (fio mmap engine).  Both tools get no fadvise hint (fio ``fadvise_hint=0``) and the
same eviction (posix_fadvise DONTNEED, checked with mincore) before every cold run; random
offsets are drawn with replacement in both (fio ``norandommap``).  Medians over ``--reps``
runs; the table shows throughput and latency percentiles of both and the ratio probe/fio.
The two tools run back to back in each repetition (alternating which goes first), and the
ratio is the median of the per-repetition ratios: on a shared machine the load changes
between repetitions far more than between two neighbouring runs.  The JSON also holds the
ratio of the medians.

    python bench/bench_probe_vs_fio.py [--size 1GiB] [--reps 7] [--count 20000]
                                       [--count-warm 200000]

Writes bench/results/probe_vs_fio.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio import _native
from cvmfs_modelio.core import units
from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.probe import probe

RESULTS = Path(__file__).resolve().parent / "results" / "probe_vs_fio.json"
METRICS = ("bw_bps", "iops", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "mean_ns", "overhead_ns")


@dataclass(frozen=True)
class Case:
    label: str
    probe_pattern: str
    fio_engine: str
    fio_rw: str
    block: int
    random: bool


CASES = (
    Case("seq 1MiB", "seq", "psync", "read", 1 << 20, False),
    Case("rand 4KiB", "rand", "psync", "randread", 4096, True),
    Case("mmap rand 4KiB", "mmap-rand", "mmap", "randread", 4096, True),
)


def make_file(path: Path, size: int) -> None:
    """Random bytes (so no file system can shortcut them), fsynced so eviction works."""
    rng = np.random.Generator(np.random.PCG64(42))
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(rng.bytes(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    left = int(_native.probe_resident_pages(str(path)).sum())
    if left:
        raise RuntimeError(f"{path}: {left} pages still resident after DONTNEED")


def warm(path: Path) -> float:
    """Read the file until it is all resident (3 tries: others may squeeze the page cache)."""
    frac = 0.0
    for _ in range(3):
        probe(path, "seq", block=1 << 20)
        frac = float(_native.probe_resident_pages(str(path)).mean())
        if frac == 1.0:
            break
    return frac


def run_probe(path: Path, case: Case, count: int, cold: bool, seed: int) -> dict[str, float]:
    res = probe(
        path,
        case.probe_pattern,
        block=case.block,
        count=count if case.random else None,
        seed=seed,
        cold=cold,
    )
    s = res.summary
    if cold and s.residency_before != 0:
        raise RuntimeError(f"probe cold run started with {s.residency_before} pages resident")
    lat = s.latency_ns
    return {
        "bw_bps": s.throughput_bps,
        "iops": s.iops,
        "p50_ns": lat.p50,
        "p90_ns": lat.p90,
        "p99_ns": lat.p99,
        "p999_ns": lat.p999,
        "mean_ns": lat.mean,
        # time per op spent outside the read/touch itself: the tool's own cost
        "overhead_ns": s.wall_ns / s.ops - lat.mean,
        "ops": s.ops,
    }


def run_fio(path: Path, size: int, case: Case, count: int, seed: int) -> dict[str, float]:
    cmd = [
        "fio",
        "--name=probe-vs-fio",
        f"--filename={path}",
        f"--size={size}",
        "--readonly",
        f"--ioengine={case.fio_engine}",
        f"--rw={case.fio_rw}",
        f"--bs={case.block}",
        "--numjobs=1",
        "--invalidate=0",  # eviction is done by us, identically for both tools
        "--fadvise_hint=0",
        "--norandommap",
        f"--randseed={seed}",
        "--percentile_list=50:90:99:99.9",
        "--output-format=json",
    ]
    if case.random:
        cmd.append(f"--number_ios={count}")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{") :])["jobs"][0]
    rd = job["read"]
    clat = rd["clat_ns"]
    pct = clat["percentile"]
    ios = int(rd["total_ios"])
    runtime_ns = float(job["job_runtime"]) * 1e6 if job.get("job_runtime") else rd["runtime"] * 1e6
    return {
        "bw_bps": float(rd["bw_bytes"]),
        "iops": float(rd["iops"]),
        "p50_ns": float(pct["50.000000"]),
        "p90_ns": float(pct["90.000000"]),
        "p99_ns": float(pct["99.000000"]),
        "p999_ns": float(pct["99.900000"]),
        "mean_ns": float(rd["lat_ns"]["mean"]),
        "overhead_ns": runtime_ns / ios - float(rd["lat_ns"]["mean"]) if ios else float("nan"),
        "ops": ios,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in (*METRICS, "ops")}


def bench(path: Path, size: int, reps: int, counts: dict[str, int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in CASES:
        for cache in ("warm", "cold"):
            count = counts[cache]
            runs: dict[str, list[dict[str, float]]] = {"probe": [], "fio": []}
            for rep in range(reps):
                # Alternate which tool goes first, so drift on a shared machine hits both.
                order = ("probe", "fio") if rep % 2 == 0 else ("fio", "probe")
                for tool in order:
                    resident = 0.0
                    if cache == "cold":
                        evict(path)
                    else:
                        resident = warm(path)
                    if tool == "probe":
                        run = run_probe(path, case, count, cache == "cold", rep + 1)
                    else:
                        run = run_fio(path, size, case, count, rep + 1)
                    run["resident_before_frac"] = resident
                    runs[tool].append(run)
            med = {t: median_of(r) for t, r in runs.items()}
            ratio = {k: med["probe"][k] / med["fio"][k] if med["fio"][k] else None for k in METRICS}
            paired = {
                k: statistics.median(
                    p[k] / f[k] for p, f in zip(runs["probe"], runs["fio"], strict=True) if f[k]
                )
                for k in METRICS
            }
            rows.append(
                {
                    "case": case.label,
                    "cache": cache,
                    "median": med,
                    "ratio_of_medians": ratio,
                    "ratio_probe_over_fio": paired,
                    "runs": runs,
                }
            )
            print(f"  {case.label:15} {cache}: done", file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "pattern",
        "cache",
        "tool",
        "MiB/s",
        "IOPS",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "overhead/op",
    )
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        for tool in ("probe", "fio"):
            m = r["median"][tool]
            lines.append(
                (
                    r["case"],
                    r["cache"],
                    tool,
                    f"{m['bw_bps'] / 2**20:,.1f}",
                    f"{m['iops']:,.0f}",
                    units.fmt_ns(m["p50_ns"]),
                    units.fmt_ns(m["p90_ns"]),
                    units.fmt_ns(m["p99_ns"]),
                    units.fmt_ns(m["p999_ns"]),
                    units.fmt_ns(m["overhead_ns"]),
                )
            )
        q = r["ratio_probe_over_fio"]

        def f(k: str, q: dict[str, float | None] = q) -> str:
            v = q[k]
            return "-" if v is None else f"{v:.2f}"

        lines.append(
            (
                r["case"],
                r["cache"],
                "probe/fio",
                f("bw_bps"),
                f("iops"),
                f("p50_ns"),
                f("p90_ns"),
                f("p99_ns"),
                f("p999_ns"),
                f("overhead_ns"),
            )
        )
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = []
    for n, x in enumerate(lines):
        out.append("  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(x)))
        if n == 0:
            out.append("  ".join("-" * v for v in w))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB", help="test file size (1GiB)")
    ap.add_argument("--reps", type=int, default=7, help="runs per tool and case (7)")
    ap.add_argument("--count", type=int, default=20000, help="random ops per cold run (20000)")
    ap.add_argument(
        "--count-warm",
        type=int,
        default=200000,
        help="random ops per warm run (200000: fio times runs in whole ms, so runs must be long)",
    )
    ap.add_argument("--dir", default=None, help="where to put the test file (a temp dir)")
    ap.add_argument("--json", default=str(RESULTS), help="result file")
    args = ap.parse_args(argv)
    if shutil.which("fio") is None:
        print("bench_probe_vs_fio: fio is not installed (apt-get install fio)", file=sys.stderr)
        return 2
    size = units.parse_size(args.size, "--size")
    with tempfile.TemporaryDirectory(prefix="probe-vs-fio-", dir=args.dir) as d:
        path = Path(d) / "data.bin"
        make_file(path, size)
        rows = bench(path, size, args.reps, {"cold": args.count, "warm": args.count_warm})
    print(format_table(rows))
    fio_version = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(
        args.json,
        {
            "file_size_bytes": size,
            "reps": args.reps,
            "random_ops": {"cold": args.count, "warm": args.count_warm},
            "rows": rows,
            "table": format_table(rows),
            "fio": fio_version.strip(),
        },
        schema="bench.probe_vs_fio",
        version=2,  # 2: file_size -> file_size_bytes
        # the file lived (and was measured) in a temporary directory under this one
        measured=[args.dir or tempfile.gettempdir()],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
