"""Cost of the preload tracer: per intercepted call, and on ONNX Runtime session creation.

Side by side in one run: untraced, traced (libcmio_preload.so) and ``strace -f``.

* per call: a C program (compiled here) times N 4 KiB ``pread``s of a page-cached file with
  CLOCK_MONOTONIC and prints ns per call; the tracer's cost is traced - untraced;
* session creation: a fresh Python process times ``onnxruntime.InferenceSession(model)``
  (interpreter start-up excluded) on a CMS model and on ~200 MB synthetic models with
  embedded and external weights.

Medians of ``--runs`` runs.  Prints one table; writes ``bench/results/tracer.json`` atomically.

    python bench/bench_tracer.py [--runs 5] [--calls 1000000] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.units import fmt_ns
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.trace.tracer import traced_env

ROOT = Path(__file__).resolve().parents[1]
CMS = ROOT.parent / "shared" / "models" / "cms"

PREAD_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
/* pread BLOCK x 4 KiB alternately from file A (traced) and file B (not traced) for
 * ROUNDS rounds; print the median ns/call of A's blocks and of B's blocks.  Alternating
 * in one process cancels most of the noise of a shared machine. */
static long long now(void) {
  struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b; return (x > y) - (x < y);
}
static char buf[4096];
static double block(int fd, long pages, long n, long start) {
  long long t0 = now();
  for (long i = 0; i < n; ++i)
    if (pread(fd, buf, 4096, ((start + i) % pages) * 4096) != 4096) exit(3);
  return (double)(now() - t0) / n;
}
int main(int argc, char** argv) {
  long total = atol(argv[3]), rounds = atol(argv[4]);
  long n = total / rounds;
  int a = open(argv[1], O_RDONLY), b = open(argv[2], O_RDONLY);
  if (a < 0 || b < 0) return 1;
  long pages = lseek(a, 0, SEEK_END) / 4096;
  block(a, pages, pages, 0);
  block(b, pages, pages, 0);
  double* ta = malloc(sizeof(double) * rounds);
  double* tb = malloc(sizeof(double) * rounds);
  for (long r = 0; r < rounds; ++r) {
    ta[r] = block(a, pages, n, r * n);
    tb[r] = block(b, pages, n, r * n);
  }
  qsort(ta, rounds, sizeof(double), cmp);
  qsort(tb, rounds, sizeof(double), cmp);
  printf("%.3f %.3f\n", ta[rounds / 2], tb[rounds / 2]);
  return 0;
}
"""

SESSION_PY = (
    "import sys, time, onnxruntime as o\n"
    "c0 = time.process_time_ns(); t0 = time.monotonic_ns()\n"
    "o.InferenceSession(sys.argv[1])\n"
    "t1 = time.monotonic_ns(); c1 = time.process_time_ns()\n"
    "print(t1 - t0, c1 - c0)\n"
)


def run_mode(mode: str, cmd: list[str], trace_root: Path, match: list[str]) -> str:
    """Run ``cmd`` untraced, traced or under strace -f; return its stdout."""
    env = dict(os.environ)
    if mode == "traced":
        d = Path(tempfile.mkdtemp(dir=trace_root))
        env = traced_env(d, match)
    elif mode == "strace":
        cmd = ["strace", "-f", "-qq", "-o", str(trace_root / "strace.out"), *cmd]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({mode}): {r.stderr[-500:]}")
    return r.stdout


def env_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    strace = subprocess.run(["strace", "-V"], capture_output=True, text=True, check=False)
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "strace": strace.stdout.splitlines()[0] if strace.stdout else "",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per cell (median reported)")
    ap.add_argument("--calls", type=int, default=1_000_000, help="preads per run")
    ap.add_argument("--strace-calls", type=int, default=100_000, help="preads per strace run")
    ap.add_argument("--synthetic-mb", type=int, default=200, help="synthetic model size, MiB")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "tracer.json"))
    args = ap.parse_args()
    modes = ("untraced", "traced", "strace")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-tracer-") as tmps:
        tmp = Path(tmps)
        traces = tmp / "traces"
        traces.mkdir()
        # ---- per-call cost
        src = tmp / "pread.c"
        src.write_text(PREAD_C)
        exe = tmp / "pread"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
        data = tmp / "cached.bin"
        other = tmp / "other.bin"
        data.write_bytes(np.random.Generator(np.random.PCG64(0)).bytes(16 << 20))
        other.write_bytes(np.random.Generator(np.random.PCG64(1)).bytes(16 << 20))
        per_call: dict[str, list[float]] = {m: [] for m in modes}
        gap: dict[str, list[float]] = {"untraced": [], "traced": []}
        for _ in range(args.runs):
            for m in modes:
                n = args.strace_calls if m == "strace" else args.calls
                cmd = [str(exe), str(data), str(other), str(n), "50"]
                a, b = (float(x) for x in run_mode(m, cmd, traces, [str(data)]).split())
                per_call[m].append(a)
                if m in gap:
                    gap[m].append(a - b)  # file A minus file B in the same process
        med = {m: statistics.median(v) for m, v in per_call.items()}
        rows.append(
            {
                "case": f"pread 4 KiB, page cache ({args.calls} calls)",
                "unit": "ns/call",
                **{m: med[m] for m in modes},
                "runs": per_call,
                "overhead_ns": med["traced"] - med["untraced"],
                # traced file vs untraced file alternating in the same traced process
                # (A - B) traced minus (A - B) untraced: file differences cancel out
                "overhead_interleaved_ns": statistics.median(gap["traced"])
                - statistics.median(gap["untraced"]),
            }
        )
        # ---- session creation
        models: list[tuple[str, Path]] = []
        cms = sorted(CMS.rglob("*.onnx"), key=lambda p: p.stat().st_size)
        if cms:
            models.append((f"CMS {cms[-1].parent.parent.name}/{cms[-1].name}", cms[-1]))
        mb = args.synthetic_mb << 20
        emb = make_model(tmp / "emb.onnx", mb, external_data=False)
        ext = make_model(tmp / "ext.onnx", mb, external_data=True)
        models.append((f"synthetic {args.synthetic_mb} MiB embedded", emb.onnx))
        models.append((f"synthetic {args.synthetic_mb} MiB external", ext.onnx))
        for name, path in models:
            times: dict[str, list[float]] = {m: [] for m in modes}
            cpus: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(args.runs):
                for m in modes:
                    out = run_mode(
                        m, [sys.executable, "-c", SESSION_PY, str(path)], traces, [str(path.parent)]
                    )
                    wall, cpu = out.split()[-2:]
                    times[m].append(float(wall))
                    cpus[m].append(float(cpu))
            med = {m: statistics.median(v) for m, v in times.items()}
            cmed = {m: statistics.median(v) for m, v in cpus.items()}
            rows.append(
                {
                    "case": f"session creation: {name}",
                    "unit": "ns",
                    **{m: med[m] for m in modes},
                    "runs": times,
                    "overhead_pct": 100.0 * (med["traced"] / med["untraced"] - 1.0),
                    "strace_overhead_pct": 100.0 * (med["strace"] / med["untraced"] - 1.0),
                    "cpu": cmed,
                    "cpu_runs": cpus,
                    "cpu_overhead_pct": 100.0 * (cmed["traced"] / cmed["untraced"] - 1.0),
                }
            )
    # ---- table
    w = 46
    head = f"{'case':<{w}} {'untraced':>10} {'traced':>10} {'strace -f':>10} {'tracer cost':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "overhead_ns" in r:
            cells = [f"{r[m]:.0f} ns" for m in modes]
            cost = f"{r['overhead_ns']:+.0f} ns"
        else:
            cells = [fmt_ns(r[m]) for m in modes]
            cost = f"{r['overhead_pct']:+.1f}%"
        print(f"{r['case']:<{w}} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10} {cost:>12}")
        if "overhead_interleaved_ns" in r:
            label = "  same process, traced - untraced fd"
            print(f"{label:<{w + 33}} {r['overhead_interleaved_ns']:+.0f} ns")
        if "cpu" in r:
            cpu = r["cpu"]
            cells = [fmt_ns(cpu[m]) for m in modes]
            label = "  CPU time (user+sys, all threads)"
            print(
                f"{label:<{w}} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10} "
                f"{r['cpu_overhead_pct']:>+11.1f}%"
            )
    print(f"(medians of {args.runs} runs; strace per-call runs do {args.strace_calls} preads)")
    doc = {
        "benchmark": "bench_tracer",
        "runs": args.runs,
        "calls": args.calls,
        "strace_calls": args.strace_calls,
        "rows": rows,
        "env": env_info(),
    }
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # the envelope (schema, time, command line, environment) like every result file
    write_json(json_path, doc, schema="bench.tracer", measured=[tempfile.gettempdir()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
