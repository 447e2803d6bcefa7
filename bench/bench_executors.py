"""Local vs Slurm executor overhead per cell (issue 12, item 6).

The same campaign (8 cells: 2 chunk configurations x 2 RTTs x cold/warm, a 2 MiB synthetic
model, the ``probe-seq`` loader, emulated target) runs with ``--executor local`` and with
``--executor slurm`` on a real one-node Slurm cluster (slurmctld + slurmd + munged on
127.0.0.1, ``tests/campaign/slurm_cluster.py``; 4 array tasks, one series each, at most
as many at once as the node has CPUs), alternately, ``--reps`` times each, into fresh
stores.  Reports the median wall time of each, the difference per cell, and the ratio.
The Slurm side pays submission, scheduling (``sched_interval=1``), per-task start-up
(Python, ORT import not needed by probe-seq, publication and server per task, not per
run) and the merge; it also runs tasks in parallel, which the local one does not.

    python bench/bench_executors.py [--reps 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.tables import format_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "executors.json"
CELLS = 8
CAMPAIGN = """
[campaign]
name = "overhead"
reps = 1
[[models]]
kind = "synthetic"
name = "m"
size = "2MiB"
width = 256
external_data = true
[target]
kind = "emulated"
[matrix]
chunking = ["256KiB/512KiB/1MiB", "whole"]
rtt_ms = [0, 1]
bandwidth = ["0"]
cache = ["cold", "warm"]
loader = ["probe-seq"]
[batch]
tasks = 4
poll_s = 0.2
"""


def _run(camp: Path, out: Path, executor: str, env: dict[str, str]) -> float:
    t = time.monotonic()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvmfs_modelio.cli",
            "run",
            str(camp),
            "-o",
            str(out),
            "--executor",
            executor,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.monotonic() - t
    if p.returncode != 0 or f"{CELLS} measured now (0 failed), 0 missing" not in p.stdout:
        raise SystemExit(f"{executor} run failed: {p.stderr.strip()[-500:]}")
    shutil.rmtree(out)
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))  # the one-node cluster lives with the tests that use it
    from tests.campaign.slurm_cluster import one_node_slurm

    walls: dict[str, list[float]] = {"local": [], "slurm": []}
    loads: list[float] = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as tmps, one_node_slurm() as slurm:
        tmp = Path(tmps)
        camp = tmp / "overhead.toml"
        camp.write_text(CAMPAIGN)
        for i in range(args.reps):
            for ex in ("local", "slurm"):
                walls[ex].append(_run(camp, tmp / f"{ex}-{i}", ex, slurm.env))
                loads.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in walls.items()}
    rows = [
        [k, f"{med[k]:.2f} s", ", ".join(f"{w:.2f}" for w in walls[k]), f"{med[k] / CELLS:.2f} s"]
        for k in ("local", "slurm")
    ]
    print(format_table(["executor", "median wall", "runs (s)", "per cell"], rows))
    over = (med["slurm"] - med["local"]) / CELLS
    print(
        f"slurm - local: {over:+.2f} s per cell; slurm/local {med['slurm'] / med['local']:.2f}x "
        f"(4 tasks on {slurm.cpus} CPUs); load average {min(loads):.1f}..{max(loads):.1f}"
    )
    write_json(
        args.json,
        {
            "cells": CELLS,
            "tasks": 4,
            "node_cpus": slurm.cpus,
            "wall_s": walls,
            "median_wall_s": med,
            "overhead_per_cell_s": over,
            "ratio_slurm_to_local": med["slurm"] / med["local"],
            "load_average_1m": loads,
        },
        schema="bench.executors",
        version=1,
    )
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
