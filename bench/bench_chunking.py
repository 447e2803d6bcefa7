"""Chunker throughput (GB/s on random data) and what-if sweep rate (configurations/s).

Side by side in one run: xor32 with the AVX2 candidate scan against its scalar path
(the same cut selection, one byte at a time: the baseline, bit-identical), FastCDC,
fixed-size; then a sweep of many (min, avg, max) over a 1 GiB corpus after the one
hash pass per file.  Medians of several runs; JSON in bench/results/chunking.json.

    python bench/bench_chunking.py [--size 512MiB] [--corpus 1GiB] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cvmfs_modelio import _native
from cvmfs_modelio.chunks.analysis import FetchModel, Requests
from cvmfs_modelio.chunks.sweep import CorpusFile, avg_range, config_grid, run_sweep
from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes, parse_size

RESULTS = Path(__file__).resolve().parent / "results" / "chunking.json"
MIB = 1 << 20


def timed(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each run (single-threaded code: CPU time is per core,
    and less disturbed than wall time on a shared machine)."""
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return wall, cpu


def random_bytes(n: int, seed: int) -> bytes:
    return np.random.Generator(np.random.PCG64(seed)).bytes(n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="512MiB", help="random buffer per chunker run")
    ap.add_argument("--corpus", default="1GiB", help="sweep corpus size (two files)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args()
    size = parse_size(args.size)
    corpus_size = parse_size(args.corpus)

    data = random_bytes(size, 1)
    cvmfs = (4 * MIB, 8 * MIB, 16 * MIB)
    small = (64 << 10, 128 << 10, 512 << 10)
    cases: list[tuple[str, str, Callable[[], object]]] = [
        ("xor32 4/8/16 MiB", "AVX2 scan", lambda: _native.xor32_offsets(data, *cvmfs)),
        (
            "xor32 4/8/16 MiB",
            "scalar (baseline)",
            lambda: _native.xor32_offsets(data, *cvmfs, simd=False),
        ),
        ("xor32 64K/128K/512K", "AVX2 scan", lambda: _native.xor32_offsets(data, *small)),
        (
            "xor32 64K/128K/512K",
            "scalar (baseline)",
            lambda: _native.xor32_offsets(data, *small, simd=False),
        ),
        ("xor32 candidate scan", "every byte", lambda: _native.xor32_scan(data, 256 << 10)),
        ("fastcdc 4/8/16 MiB", "", lambda: _native.chunk_offsets(data, "fastcdc", *cvmfs)),
        ("fastcdc 64K/128K/512K", "", lambda: _native.chunk_offsets(data, "fastcdc", *small)),
        ("fixed 24 MiB", "", lambda: _native.chunk_offsets(data, "fixed")),
    ]
    # Same cuts from the fast and the baseline path, or the comparison is meaningless.
    for params in (cvmfs, small):
        a = _native.xor32_offsets(data, *params)
        b = _native.xor32_offsets(data, *params, simd=False)
        if not np.array_equal(a, b):
            print("AVX2 and scalar xor32 disagree", file=sys.stderr)
            return 1

    rows = []
    results = []
    for name, variant, fn in cases:
        fn()  # warm-up
        wall, cpu = timed(fn, args.runs)
        med, med_cpu = statistics.median(wall), statistics.median(cpu)
        gbs, gbs_cpu = size / med / 1e9, size / max(med_cpu, 1e-9) / 1e9
        results.append(
            {
                "chunker": name,
                "variant": variant,
                "bytes": size,
                "wall_s": wall,
                "cpu_s": cpu,
                "median_wall_s": med,
                "median_cpu_s": med_cpu,
                "gb_per_s_wall": gbs,
                "gb_per_s_cpu": gbs_cpu,
            }
        )
        rows.append([name, variant, f"{med * 1e3:.1f} ms", f"{gbs:.2f}", f"{gbs_cpu:.2f}"])
        print(f"  {name} {variant}: {gbs:.2f} GB/s wall, {gbs_cpu:.2f} per CPU s", file=sys.stderr)

    # Sweep over a 1 GiB corpus (two files), after one hash pass per file.
    with tempfile.TemporaryDirectory(prefix="bench-chunking-") as tmp:
        paths = []
        for i, n in enumerate((corpus_size // 2, corpus_size - corpus_size // 2)):
            p = os.path.join(tmp, f"corpus{i}.bin")
            with open(p, "wb") as f:
                for off in range(0, n, 64 * MIB):
                    f.write(random_bytes(min(64 * MIB, n - off), 100 + i * 1000 + off // MIB))
            paths.append(p)
        # One file with a trace-like request set (10,000 random 4 KiB reads on 4 handles),
        # one with the whole-file load.
        rng = np.random.Generator(np.random.PCG64(7))
        n0 = os.path.getsize(paths[0])
        starts = np.sort(rng.integers(0, n0 - 4096, 10_000)).astype(np.int64)
        req = Requests(
            t_ns=np.arange(10_000, dtype=np.int64),
            start=starts,
            end=starts + 4096,
            handle=rng.integers(0, 4, 10_000).astype(np.int64),
            open_ns=0,
            n_events=10_000,
        )
        corpus = [CorpusFile.open(paths[0], req), CorpusFile.open(paths[1])]
        configs = config_grid(avg_range(256 << 10, 64 << 20), [0.25, 0.5], [2.0, 4.0])
        t = time.perf_counter()
        for cf in corpus:
            cf.scan(min(c.avg_size for c in configs))
        hash_s = time.perf_counter() - t
        model = FetchModel()
        run_sweep(corpus, configs, model)  # warm-up
        ts, ts_cpu = timed(lambda: run_sweep(corpus, configs, model), args.runs)
        med, med_cpu = statistics.median(ts), statistics.median(ts_cpu)
        rate, rate_cpu = len(configs) / med, len(configs) / max(med_cpu, 1e-9)
    rows.append(
        [
            "sweep hash pass",
            f"{fmt_bytes(corpus_size)}, once per file",
            f"{hash_s * 1e3:.1f} ms",
            f"{corpus_size / hash_s / 1e9:.2f}",
            "",
        ]
    )
    rows.append(
        [
            "sweep (after hash pass)",
            f"{len(configs)} configs over {fmt_bytes(corpus_size)}",
            f"{med * 1e3:.1f} ms",
            f"{rate:.0f} configs/s",
            f"{rate_cpu:.0f} configs/s",
        ]
    )
    table = format_table(
        ["chunker", "variant", "median wall", "GB/s (wall)", "GB/s (per CPU s)"], rows
    )
    print(f"random data {fmt_bytes(size)}, medians of {args.runs} runs")
    print(table)
    write_json(
        args.json,
        {
            "benchmark": "chunking",
            "runs": args.runs,
            "chunkers": results,
            "sweep": {
                "corpus_bytes": corpus_size,
                "configs": len(configs),
                "hash_pass_s": hash_s,
                "wall_s": ts,
                "cpu_s": ts_cpu,
                "median_wall_s": med,
                "configs_per_s": rate,
                "configs_per_cpu_s": rate_cpu,
            },
            "table": table,
        },
        schema="bench.chunking",
        measured=[tempfile.gettempdir()],
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
