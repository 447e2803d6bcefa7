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
import json
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

from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.trace import traced_env
from cvmfs_modelio.units import fmt_ns

ROOT = Path(__file__).resolve().parents[1]
CMS = ROOT.parent / "shared" / "models" / "cms"

PREAD_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static long long now(void) {
  struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
int main(int argc, char** argv) {
  long n = atol(argv[2]);
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) return 1;
  off_t size = lseek(fd, 0, SEEK_END);
  long pages = size / 4096;
  static char buf[4096];
  for (long i = 0; i < pages; ++i) if (pread(fd, buf, 4096, i * 4096) != 4096) return 2;
  long long t0 = now();
  for (long i = 0; i < n; ++i)
    if (pread(fd, buf, 4096, (i % pages) * 4096) != 4096) return 3;
  long long t1 = now();
  printf("%.3f\n", (double)(t1 - t0) / n);
  return 0;
}
"""

SESSION_PY = (
    "import sys, time, onnxruntime as o\n"
    "t0 = time.monotonic_ns(); o.InferenceSession(sys.argv[1]); t1 = time.monotonic_ns()\n"
    "print(t1 - t0)\n"
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
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
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
        data.write_bytes(np.random.Generator(np.random.PCG64(0)).bytes(16 << 20))
        per_call: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.runs):
            for m in modes:
                n = args.strace_calls if m == "strace" else args.calls
                out = run_mode(m, [str(exe), str(data), str(n)], traces, [str(data)])
                per_call[m].append(float(out))
        med = {m: statistics.median(v) for m, v in per_call.items()}
        rows.append(
            {
                "case": "pread 4 KiB, page cache (ns/call)",
                "unit": "ns",
                **{m: med[m] for m in modes},
                "runs": per_call,
                "overhead_ns": med["traced"] - med["untraced"],
            }
        )
        # ---- session creation
        models: list[tuple[str, Path]] = []
        cms = sorted(CMS.rglob("*.onnx"), key=lambda p: p.stat().st_size)
        if cms:
            models.append((f"CMS {cms[-1].relative_to(CMS)}", cms[-1]))
        mb = args.synthetic_mb << 20
        emb = make_model(tmp / "emb.onnx", mb, external_data=False)
        ext = make_model(tmp / "ext.onnx", mb, external_data=True)
        models.append((f"synthetic {args.synthetic_mb} MiB embedded", emb.onnx))
        models.append((f"synthetic {args.synthetic_mb} MiB external", ext.onnx))
        for name, path in models:
            times: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(args.runs):
                for m in modes:
                    out = run_mode(
                        m, [sys.executable, "-c", SESSION_PY, str(path)], traces, [str(path.parent)]
                    )
                    times[m].append(float(out.split()[-1]))
            med = {m: statistics.median(v) for m, v in times.items()}
            rows.append(
                {
                    "case": f"session creation: {name}",
                    "unit": "ns",
                    **{m: med[m] for m in modes},
                    "runs": times,
                    "overhead_pct": 100.0 * (med["traced"] / med["untraced"] - 1.0),
                    "strace_overhead_pct": 100.0 * (med["strace"] / med["untraced"] - 1.0),
                }
            )
    # ---- table
    head = f"{'case':<52} {'untraced':>10} {'traced':>10} {'strace -f':>10} {'tracer cost':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        cost = f"+{r['overhead_ns']:.0f} ns" if "overhead_ns" in r else f"{r['overhead_pct']:+.1f}%"
        cells = [f"{r[m]:.0f} ns" if r["case"].startswith("pread") else fmt_ns(r[m]) for m in modes]
        print(f"{r['case']:<52} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10} {cost:>12}")
    print(f"(medians of {args.runs} runs; strace per-call runs do {args.strace_calls} preads)")
    doc = {
        "benchmark": "bench_tracer",
        "runs": args.runs,
        "calls": args.calls,
        "strace_calls": args.strace_calls,
        "rows": rows,
        "env": env_info(),
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmpf.write_text(json.dumps(doc, indent=1))
    os.replace(tmpf, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
