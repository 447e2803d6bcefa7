"""Timing fidelity of the emulated client: the nine recorded cells replayed on the emulated stack.

The recording (``../shared/testvectors/cvmfs-timing/``) timed cold loads through a real cvmfs2
2.12 client and through cmio-simfs of commit cca4cc7, side by side on a machine of this kind.
This script regenerates the same files from their recipes, publishes them with the same
chunking (1/2/4 MiB for the ONNX models, 4/8/16 MiB for the 64 MiB file), serves them with the
builtin stratum behind the same WAN emulator (``sim.netem.NetemProxy``: RTT 0/10/25 ms, 100
MiB/s shared link), and times every cell cold (client cache emptied, page cache dropped) with
each client profile, interleaved rep by rep (the order of the profiles alternates).  Printed per
cell: the recorded real and emulated medians, the medians measured here, emulated/real per
profile, fast/cvmfs-2.12 measured side by side, and fast against the recorded emulated figure
(what the ``fast`` profile should reproduce).  Every run checks that it fetched exactly the
recorded number of objects (proof of a cold cache: a warm page or object would fetch fewer).

    python bench/bench_client_fidelity.py [--reps 5] [--rtts 0,10,25]
        [--profiles cvmfs-2.12,fast] [--warmup 1] [--json bench/results/client_fidelity.json]
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
import time
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.sim.mount import MountOptions, SimMount, read_client_profile
from cvmfs_modelio.sim.publish import PublishParams, publish

MiB = 1 << 20
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "client_fidelity.json"
RECORDING = (
    HERE.parents[1] / "shared" / "testvectors" / "cvmfs-timing" / "cold-real-vs-emulated.json"
)
BANDWIDTH = 100 * MiB
TARGET = 0.05  # every cell within 5% of the recorded real time

# workload -> (store, repository path of the file opened, how it is timed)
WORKLOADS = {
    "onnx_external": ("onnx", "onnx/m.onnx", "ort"),
    "onnx_embedded": ("onnx", "onnx/me.onnx", "ort"),
    "cat_64MiB_4_8_16": ("big", "big/P1/r64.bin", "dd"),
}
ORT_SESSION = (
    "import sys, time, onnxruntime as ort\n"
    "t = time.perf_counter_ns()\n"
    "ort.InferenceSession(sys.argv[1])\n"
    "print(time.perf_counter_ns() - t)\n"
)


def uptime() -> str:
    r = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return r.stdout.strip()


def make_sources(work: Path) -> dict[str, Path]:
    """The recorded files, from their recipes; one source tree per chunking."""
    onnx = work / "src-onnx"
    make_model(onnx / "onnx" / "m.onnx", 48 << 20, external_data=True)
    make_model(onnx / "onnx" / "me.onnx", 48 << 20, external_data=False)
    big = work / "src-big"
    (big / "big" / "P1").mkdir(parents=True)
    data = np.random.Generator(np.random.PCG64(2026)).bytes(64 * MiB)
    (big / "big" / "P1" / "r64.bin").write_bytes(data)
    return {"onnx": onnx, "big": big}


def start_server(store: Path, rtt_ms: float) -> tuple[subprocess.Popen[str], str]:
    """``sim serve`` (builtin stratum behind the WAN emulator) in its own process."""
    argv = [sys.executable, "-m", "cvmfs_modelio.cli", "sim", "serve", str(store)]
    argv += ["--rtt-ms", repr(rtt_ms), "--bandwidth", str(BANDWIDTH), "--netem"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    parts = line.split()
    if len(parts) < 2 or parts[0] != "stratum":
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise SystemExit(f"bench: sim serve did not start: {line.strip()} {err.strip()}")
    return proc, parts[1]


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_once(mount: SimMount, rel: str, how: str) -> tuple[float, int]:
    """One cold run: (seconds, objects fetched)."""
    mount.cleanup()  # client cache emptied, page cache of every file dropped
    before = mount.counters()["fetch.n_downloads"]
    path = mount.path / rel
    if how == "ort":
        r = subprocess.run(
            [sys.executable, "-c", ORT_SESSION, str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        seconds = int(r.stdout.strip().splitlines()[-1]) / 1e9
    else:
        t0 = time.perf_counter()
        subprocess.run(
            ["dd", f"if={path}", "of=/dev/null", "bs=1M"],
            capture_output=True,
            check=True,
            timeout=300,
        )
        seconds = time.perf_counter() - t0
    return seconds, mount.counters()["fetch.n_downloads"] - before


def recorded() -> tuple[dict[tuple[int, str], dict[str, Any]], dict[str, Any]]:
    doc: dict[str, Any] = json.loads(RECORDING.read_text())
    cells = {(int(c["rtt_ms"]), c["workload"]): c for c in doc["summary"]}
    return cells, doc["workloads"]


def spread(xs: list[float]) -> float:
    """(max - min) / median: the run-to-run noise of a cell."""
    return (max(xs) - min(xs)) / statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=5, help="cold runs per cell and profile (5)")
    ap.add_argument("--rtts", default="0,10,25", help="round-trip times in ms (0,10,25)")
    ap.add_argument(
        "--profiles",
        default="cvmfs-2.12,fast",
        help="client profiles compared; NAME@US sets the residual per object to US "
        "microseconds (cvmfs-2.12,fast)",
    )
    ap.add_argument("--warmup", type=int, default=1, help="discarded runs per cell (1)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="cells to run")
    ap.add_argument("--json", default=str(RESULTS), help=f"result file ({RESULTS})")
    args = ap.parse_args()
    rtts = [int(float(x)) for x in args.rtts.split(",")]
    profiles = args.profiles.split(",")
    workloads = args.workloads.split(",")
    cells, recipes = recorded()
    started = uptime()
    print(f"load: {started}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-fidelity-"))
    runs: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = [{"when": "start", "uptime": started}]
    try:
        sources = make_sources(work)
        stores = {}
        for name, params in (
            ("onnx", PublishParams(MiB, 2 * MiB, 4 * MiB)),
            ("big", PublishParams(4 * MiB, 8 * MiB, 16 * MiB)),
        ):
            stores[name] = work / f"store-{name}"
            publish(sources[name], stores[name], params)
        for rtt in rtts:
            for store_name in ("onnx", "big"):
                wls = [w for w in workloads if WORKLOADS[w][0] == store_name]
                if not wls:
                    continue
                server, url = start_server(stores[store_name], float(rtt))
                mounts: dict[str, SimMount] = {}
                try:
                    for p in profiles:
                        mp = work / f"mnt-{p}"
                        mp.mkdir(exist_ok=True)
                        # NAME@US: the profile with its residual per object set to US
                        # microseconds (e.g. cvmfs-2.12@0: the behaviours alone).
                        name, _, cost = p.partition("@")
                        opts = MountOptions(
                            cache=work / f"cache-{p}",
                            client_profile=name,
                            cost_per_object_us=float(cost) if cost else None,
                        )
                        mounts[p] = SimMount(url, mp, opts)
                        mounts[p].start()
                        assert read_client_profile(mp) == name
                    for w in wls:
                        _, rel, how = WORKLOADS[w]
                        want = int(recipes[w]["objects_fetched_cold"])
                        load = uptime()
                        loads.append({"when": f"rtt {rtt} {w}", "uptime": load})
                        print(f"RTT {rtt} ms {w}: {load}", flush=True)
                        for rep in range(-args.warmup, args.reps):
                            order = profiles if rep % 2 == 0 else profiles[::-1]
                            for p in order:
                                secs, fetched = run_once(mounts[p], rel, how)
                                if fetched != want:
                                    raise SystemExit(
                                        f"bench: {w} at RTT {rtt} with {p} fetched {fetched} "
                                        f"objects, the recording {want}: not the same cold load"
                                    )
                                if rep >= 0:
                                    runs.append(
                                        {
                                            "rtt_ms": rtt,
                                            "workload": w,
                                            "profile": p,
                                            "rep": rep,
                                            "seconds": secs,
                                            "objects_fetched": fetched,
                                            "loadavg_1min": os.getloadavg()[0],
                                        }
                                    )
                finally:
                    for m in mounts.values():
                        m.stop()
                    stop_server(server)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads.append({"when": "end", "uptime": uptime()})

    table = []
    for rtt in rtts:
        for w in workloads:
            rec = cells[(rtt, w)]
            row: dict[str, Any] = {
                "rtt_ms": rtt,
                "workload": w,
                "objects": int(recipes[w]["objects_fetched_cold"]),
                "real_recorded_s": rec["real_median_s"],
                "emulated_recorded_s": rec["emulated_median_s"],
            }
            for p in profiles:
                xs = [
                    r["seconds"]
                    for r in runs
                    if (r["rtt_ms"], r["workload"], r["profile"]) == (rtt, w, p)
                ]
                med = statistics.median(xs)
                row[p] = {
                    "median_s": med,
                    "runs_s": xs,
                    "spread": spread(xs),
                    "over_real": med / rec["real_median_s"],
                    "over_recorded_emulated": med / rec["emulated_median_s"],
                }
            if "fast" in profiles and "cvmfs-2.12" in profiles:
                row["fast_over_cvmfs"] = row["fast"]["median_s"] / row["cvmfs-2.12"]["median_s"]
                # Load-independent estimate: the profiles' ratio measured side by side here,
                # carried onto the recording (whose emulated side is the fast profile).
                row["cvmfs_over_real_by_ratio"] = (
                    rec["emulated_median_s"] / rec["real_median_s"] / row["fast_over_cvmfs"]
                )
            table.append(row)

    cols = ["RTT", "workload", "obj", "real rec", "emu rec"]
    for p in profiles:
        cols += [f"{p}", f"{p}/real", f"±{p}"]
    cols += ["fast/cvmfs", "fast/emu rec", "cvmfs/real by ratio"]
    lines = [cols]
    for row in table:
        cells_out = [
            f"{row['rtt_ms']}",
            row["workload"],
            str(row["objects"]),
            f"{row['real_recorded_s']:.3f}",
            f"{row['emulated_recorded_s']:.3f}",
        ]
        for p in profiles:
            c = row[p]
            ok = (
                "" if p != "cvmfs-2.12" else (" ok" if abs(c["over_real"] - 1) <= TARGET else " !!")
            )
            cells_out += [f"{c['median_s']:.3f}", f"{c['over_real']:.3f}{ok}", f"{c['spread']:.1%}"]
        cells_out.append(f"{row['fast_over_cvmfs']:.3f}" if "fast_over_cvmfs" in row else "-")
        cells_out.append(f"{row['fast']['over_recorded_emulated']:.3f}" if "fast" in row else "-")
        by_ratio = row.get("cvmfs_over_real_by_ratio")
        cells_out.append(f"{by_ratio:.3f}" if by_ratio is not None else "-")
        lines.append(cells_out)
    widths = [max(len(r[i]) for r in lines) for i in range(len(cols))]
    print()
    for r in lines:
        print("  ".join(c.rjust(wd) for c, wd in zip(r, widths, strict=True)))
    if "cvmfs-2.12" in profiles:
        worst = max(abs(r["cvmfs-2.12"]["over_real"] - 1) for r in table)
        inside = sum(abs(r["cvmfs-2.12"]["over_real"] - 1) <= TARGET for r in table)
        print(
            f"\ncvmfs-2.12: {inside}/{len(table)} cells within {TARGET:.0%} of the recorded "
            f"real time, worst {worst:.1%}"
        )
        if "fast" in profiles:
            worst_r = max(abs(r["cvmfs_over_real_by_ratio"] - 1) for r in table)
            inside_r = sum(abs(r["cvmfs_over_real_by_ratio"] - 1) <= TARGET for r in table)
            print(
                f"cvmfs-2.12 by ratio (recorded emulated/real / measured fast/cvmfs): "
                f"{inside_r}/{len(table)} within {TARGET:.0%}, worst {worst_r:.1%}"
            )
    print(f"load at the end: {loads[-1]['uptime']}")

    payload = {
        "recording": str(RECORDING.name),
        "reps": args.reps,
        "warmup": args.warmup,
        "bandwidth_bytes_per_s": BANDWIDTH,
        "target_fraction": TARGET,
        "load": loads,
        "cells": table,
        "runs": runs,
    }
    # The envelope (schema, created_utc, command_line, environment) comes from write_json.
    write_json(
        args.json,
        payload,
        schema="bench.client_fidelity",
        version=2,
        measured=[tempfile.gettempdir()],
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
