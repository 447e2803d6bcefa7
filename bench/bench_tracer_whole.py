"""The tracer's cost as a user feels it: the whole process, timed from outside (issue 9, item 7).

For every model of the corpus (the real CMS models in ../shared/models/cms and synthetic ones),
one workload, ``python -c "import onnxruntime; InferenceSession(MODEL)"``, run side by side in
one interleaved loop (the order rotates every repetition) in five ways:

- ``untraced``;
- ``LD_PRELOAD``: the tracer library preloaded and tracing (``traced_env``), no launcher;
- ``trace --kernel off``: ``cvmfs-modelio trace --kernel off --match DIR -- ...``;
- ``trace-off -S``: the same launcher started with ``python -S`` (no site hooks: on this
  machine a sandbox ``.pth`` costs every Python start ~24 ms), to separate the project's own
  cost from the interpreter's;
- ``trace``: the same with kernel tracepoints (tracefs; the default when root);
- ``strace -f``: ``strace -f -qq -o FILE ...``.

Whole-process wall time is measured around the command (medians of ``--reps``, ratio to
untraced; targets: trace off <= 1.10x, trace <= 1.25x).  The workload also prints its own
session-creation time, which gives the in-process overhead of the tracer (target <= 5%).
Also timed: ``cvmfs-modelio --help`` and ``cvmfs-modelio trace -- true`` against ``true``.
The machine is shared: ``uptime`` is recorded before and after.

    python bench/bench_tracer_whole.py [--reps 11] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns
from cvmfs_modelio.trace.launch import traced_env

ROOT = Path(__file__).resolve().parents[1]
CMS = ROOT.parent / "shared" / "models" / "cms"
CLI = [sys.executable, "-m", "cvmfs_modelio.cli"]
_exe = Path(sys.executable).parent / "cvmfs-modelio"  # the console script of this install
EXE = str(_exe) if _exe.is_file() else ""
WORKLOAD = (
    "import sys, time, onnxruntime as o\n"
    "t0 = time.monotonic_ns(); o.InferenceSession(sys.argv[1]); t1 = time.monotonic_ns()\n"
    "print(t1 - t0)\n"
)
MODES = ("untraced", "preload", "trace-off", "trace-off-S", "trace", "strace")
# The site-packages of this interpreter's environment (for the ``-S`` launcher).
SITE_PACKAGES = str(Path(str(__import__("cvmfs_modelio").__file__)).resolve().parents[1])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def command(mode: str, model: Path, work: Path) -> tuple[list[str], dict[str, str] | None]:
    base = [sys.executable, "-c", WORKLOAD, str(model)]
    match = str(model.parent)
    tdir = work / "trace"
    if mode == "untraced":
        return base, None
    if mode == "preload":
        tdir.mkdir()
        return base, traced_env(tdir, [match])
    if mode in ("trace-off", "trace"):
        kernel = "off" if mode == "trace-off" else "auto"
        launcher = [EXE] if EXE else CLI
        return [
            *launcher,
            "trace",
            "--kernel",
            kernel,
            "-o",
            str(tdir),
            "--match",
            match,
            "--",
            *base,
        ], None
    if mode == "trace-off-S":
        # The same launcher without the interpreter's site hooks (``python -S``; the package
        # found through PYTHONPATH): what the project's own code costs.
        env = dict(os.environ)
        env["PYTHONPATH"] = SITE_PACKAGES
        cmd = [sys.executable, "-S", "-m", "cvmfs_modelio.cli", "trace", "--kernel", "off"]
        return [*cmd, "-o", str(tdir), "--match", match, "--", *base], env
    if mode == "strace":
        return ["strace", "-f", "-qq", "-o", str(work / "strace.out"), *base], None
    raise ValueError(mode)


def _children_cpu_ns() -> int:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((ru.ru_utime + ru.ru_stime) * 1e9)


def run_once(mode: str, model: Path, root: Path) -> tuple[int, int, int]:
    """(whole-process wall ns, its CPU ns (user + system, all its processes), in-process
    session ns).  CPU time is the steadier measure on a shared machine."""
    work = Path(tempfile.mkdtemp(dir=root))
    try:
        cmd, env = command(mode, model, work)
        c0 = _children_cpu_ns()
        t0 = time.monotonic_ns()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        t1 = time.monotonic_ns()
        c1 = _children_cpu_ns()
        if r.returncode != 0:
            raise SystemExit(f"{mode} {model}: exit {r.returncode}: {r.stderr[-400:]}")
        return t1 - t0, c1 - c0, int(r.stdout.split()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def time_cmd(cmd: list[str], reps: int) -> int:
    vals = []
    for _ in range(reps):
        t0 = time.monotonic_ns()
        subprocess.run(cmd, capture_output=True, check=False)
        vals.append(time.monotonic_ns() - t0)
    return round(statistics.median(vals))


def corpus(tmp: Path, quick: bool) -> list[tuple[str, Path]]:
    from cvmfs_modelio.models.synthetic import make_model

    out = [
        (f"cms/{p.relative_to(CMS).parent}/{p.name}", p)
        for p in sorted(CMS.rglob("*.onnx"), key=lambda p: p.stat().st_size)
    ]
    if quick:
        out = out[-2:]
    size = (8 if quick else 48) << 20
    emb = make_model(tmp / "syn-emb" / "model.onnx", size)
    ext = make_model(tmp / "syn-ext" / "model.onnx", size, external_data=True)
    out.append((f"synthetic {size >> 20} MiB embedded", emb.onnx))
    out.append((f"synthetic {size >> 20} MiB external", ext.onnx))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=11, help="runs per cell, median (default 11)")
    ap.add_argument("--quick", action="store_true", help="2 CMS models, 8 MiB synthetic, 3 reps")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "tracer_whole.json"))
    args = ap.parse_args()
    reps = 3 if args.quick else args.reps
    if os.geteuid() != 0:
        print("note: not root: 'trace' records no kernel tracepoints", file=sys.stderr)
    load_before = uptime()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-tracer-whole-") as tmps:
        tmp = Path(tmps)
        models = corpus(tmp, args.quick)
        runs_root = tmp / "runs"
        runs_root.mkdir()
        for name, model in models:
            wall: dict[str, list[int]] = {m: [] for m in MODES}
            cpu: dict[str, list[int]] = {m: [] for m in MODES}
            sess: dict[str, list[int]] = {m: [] for m in MODES}
            run_once("untraced", model, runs_root)  # warm the page cache and imports
            for i in range(reps):
                order = MODES[i % len(MODES) :] + MODES[: i % len(MODES)]
                for m in order:
                    w, c, s = run_once(m, model, runs_root)
                    wall[m].append(w)
                    cpu[m].append(c)
                    sess[m].append(s)
            med = {m: round(statistics.median(v)) for m, v in wall.items()}
            low = {m: min(v) for m, v in wall.items()}
            cmed = {m: round(statistics.median(v)) for m, v in cpu.items()}
            smed = {m: round(statistics.median(v)) for m, v in sess.items()}
            size = sum(f.stat().st_size for f in model.parent.iterdir() if f.is_file())
            rows.append(
                {
                    "model": name,
                    "size_bytes": size,
                    "wall_median_ns": med,
                    "wall_ratio": {m: med[m] / med["untraced"] for m in MODES},
                    "wall_min_ns": low,
                    "wall_min_ratio": {m: low[m] / low["untraced"] for m in MODES},
                    "cpu_median_ns": cmed,
                    "cpu_ratio": {m: cmed[m] / cmed["untraced"] for m in MODES},
                    "cpu_runs_ns": cpu,
                    "session_median_ns": smed,
                    "session_overhead_pct": 100.0 * (smed["preload"] / smed["untraced"] - 1),
                    "session_overhead_trace_pct": 100.0 * (smed["trace"] / smed["untraced"] - 1),
                    "wall_runs_ns": wall,
                    "session_runs_ns": sess,
                }
            )
            print(f"[{name}] done", file=sys.stderr)
        launcher = [EXE] if EXE else CLI
        startup = {
            "true_ns": time_cmd(["true"], reps),
            "python_c_pass_ns": time_cmd([sys.executable, "-c", "pass"], reps),
            "python_S_c_pass_ns": time_cmd([sys.executable, "-S", "-c", "pass"], reps),
            "help_ns": time_cmd([*launcher, "--help"], reps),
            "trace_kernel_off_true_ns": time_cmd(
                [*launcher, "trace", "--kernel", "off", "-o", str(tmp / "t1"), "--", "true"], 1
            ),
        }
    load_after = uptime()
    head = [
        "model",
        "size",
        "untraced",
        "LD_PRELOAD",
        "trace off",
        "off, -S",
        "trace",
        "strace -f",
        "session",
        "+preload",
        "+trace",
    ]
    body = []
    for r in rows:
        m, q = r["wall_median_ns"], r["wall_ratio"]
        body.append(
            [
                r["model"],
                fmt_bytes(r["size_bytes"]),
                fmt_ns(m["untraced"]),
                f"{q['preload']:.2f}x",
                f"{q['trace-off']:.2f}x",
                f"{q['trace-off-S']:.2f}x",
                f"{q['trace']:.2f}x",
                f"{q['strace']:.2f}x",
                fmt_ns(r["session_median_ns"]["untraced"]),
                f"{r['session_overhead_pct']:+.1f}%",
                f"{r['session_overhead_trace_pct']:+.1f}%",
            ]
        )
    print(format_table(head, body))
    print(
        f"medians of {reps}; whole process from outside; 'session' = in-process "
        "InferenceSession time (untraced) and its change under the tracer"
    )
    modes = ("preload", "trace-off", "trace-off-S", "trace", "strace")
    head2 = ["model", *(f"{m} min" for m in modes), *(f"{m} CPU" for m in modes)]
    body2 = [
        [
            r["model"],
            *(f"{r['wall_min_ratio'][m]:.2f}x" for m in modes),
            *(f"{r['cpu_ratio'][m]:.2f}x" for m in modes),
        ]
        for r in rows
    ]
    print(
        "\nratios of the minimum wall times, and of the median CPU time (user + system of "
        "every process of the run), which a shared machine disturbs less"
    )
    print(format_table(head2, body2))
    print(
        "start-up: true {true}, python -c pass {py} (python -S: {pys}), "
        "cvmfs-modelio --help {help}".format(
            true=fmt_ns(startup["true_ns"]),
            py=fmt_ns(startup["python_c_pass_ns"]),
            pys=fmt_ns(startup["python_S_c_pass_ns"]),
            help=fmt_ns(startup["help_ns"]),
        )
    )
    print(f"load before: {load_before}\nload after:  {load_after}")
    write_json(
        args.json,
        {
            "reps": reps,
            "rows": rows,
            "startup": startup,
            "uptime_before": load_before,
            "uptime_after": load_after,
            "workload": WORKLOAD,
            "modes": list(MODES),
        },
        schema="bench.tracer_whole",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
