"""The ``slurm`` executor on a real one-node Slurm cluster (slurmctld + slurmd + munged,
``slurm_cluster.one_node_slurm``): same rows as ``local``, cancelled tasks redone on resume,
a missing ``sbatch`` refused in one line before any store is made."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvmfs_modelio.campaign.cells import expand, pending
from cvmfs_modelio.campaign.execute import execute
from cvmfs_modelio.campaign.executors._batch import split
from cvmfs_modelio.campaign.spec import load_campaign
from cvmfs_modelio.campaign.store import ResultsStore
from cvmfs_modelio.sim.mount import mounts
from tests.campaign.slurm_cluster import SlurmCluster, one_node_slurm
from tests.conftest import require_root_fuse, require_tool

# 2 chunk configurations x 2 RTTs x cold/warm = 8 cells in 4 series (one per task)
CAMPAIGN = """
[campaign]
name = "s8"
reps = 1
executor = "slurm"
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
poll_s = 0.3
"""

# what must not differ between executors for the same cell (times may)
SAME = [
    "cell_key",
    "rep",
    "ok",
    "error",
    "model_bytes",
    "chunking",
    "chunk_label",
    "rtt_ns",
    "cache_state",
    "loader",
    "chunks_total",
    "objects_total",
    "objects_fetched",
    "bytes_fetched",
    "bytes_requested",
    "cold_verified",
    "state_verified",
    "primed",
]


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    require_tool(
        "munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo"
    )
    require_root_fuse()
    with one_node_slurm() as cluster:
        yield cluster


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cvmfs_modelio.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _mounts_under(d: Path) -> list[str]:
    root = str(d.resolve()) + "/"
    return [mp for mp, _t, _s in mounts() if (mp + "/").startswith(root)]


def _queued(cluster: SlurmCluster) -> list[str]:
    """Array tasks in the queue, one line each (``-r``: pending tasks expanded)."""
    out = cluster.run("squeue", "-h", "-r", "-o", "%i %T")
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")[:-1]


def _wait_queued(cluster: SlurmCluster, proc: subprocess.Popen[str]) -> list[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        q = _queued(cluster)
        if q:
            return q
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the campaign's job never appeared in squeue")


def test_slurm_campaign_merges_to_the_rows_of_the_local_executor(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    camp = tmp_path / "s8.toml"
    camp.write_text(CAMPAIGN)
    spec = load_campaign(camp)
    local = execute(spec, tmp_path / "local", executor="local", workdir=tmp_path)
    assert local.stats.measured == 8

    p = _cli(
        ["run", str(camp), "-o", str(tmp_path / "slurm"), "--workdir", str(tmp_path)], slurm.env
    )
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "8 measured now (0 failed), 0 missing" in out
    assert "slurm job " in err and ": 4 tasks" in err

    a = ResultsStore.open(tmp_path / "local").measurements(dedupe=False)
    b = ResultsStore.open(tmp_path / "slurm").measurements(dedupe=False)
    assert len(a) == len(b) == 8
    assert not b.duplicated(["cell_key", "rep"]).any()  # every cell exactly once
    keys = {c.key for c in expand(spec)}
    assert set(a["cell_key"]) == set(b["cell_key"]) == keys
    a = a.sort_values("cell_key").reset_index(drop=True)
    b = b.sort_values("cell_key").reset_index(drop=True)
    assert a[SAME].to_dict("records") == b[SAME].to_dict("records")
    assert b["ok"].all() and b["state_verified"].all()
    # four tasks, each one series (cold then warm in one mount), each with its own mount
    assert set(b["executor"]) == {"slurm"} and set(a["executor"]) == {"local"}
    assert b["task_id"].nunique() == 4
    assert (b.groupby("task_id")["cell_key"].count() == 2).all()
    in_order = b.sort_values("series_index").groupby("task_id")["cache_state"]
    assert set(in_order.apply(tuple)) == {("cold", "warm")}
    # merged by rename: nothing left in tasks/ or batch/, no job, no mount
    store = tmp_path / "slurm"
    assert list((store / "tasks").iterdir()) == []
    assert not (store / "batch").exists()
    assert _queued(slurm) == []
    assert _mounts_under(tmp_path) == []


def test_a_cancelled_task_is_missing_and_only_its_cells_are_resubmitted(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    camp = tmp_path / "s8.toml"
    # held at submission, so the test can cancel task 3 before any task runs
    camp.write_text(CAMPAIGN.replace("poll_s = 0.3", 'poll_s = 0.3\nsubmit_args = ["--hold"]'))
    spec = load_campaign(camp)
    shares = split(pending(expand(spec), 1, set()), 4)
    lost = {w.cell.key for w in shares[3]}
    assert len(lost) == 2
    results = tmp_path / "res"

    p = _cli(["run", str(camp), "-o", str(results)], slurm.env)
    queued = _wait_queued(slurm, p)
    job = queued[0].split("_")[0]
    assert sorted(queued) == [f"{job}_{i} PENDING" for i in range(4)]
    assert slurm.run("scancel", f"{job}_3").returncode == 0
    assert slurm.run("scontrol", "release", job).returncode == 0
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "6 measured now (0 failed), 2 missing" in out
    assert f"slurm task 3 (job {job}) never started: 2 of 2 measurements missing" in err
    first = ResultsStore.open(results).measurements(dedupe=False)
    assert set(first["cell_key"]) == {c.key for c in expand(spec)} - lost

    p = _cli(["run", str(camp), "-o", str(results), "--resume"], slurm.env)
    queued = _wait_queued(slurm, p)
    job2 = queued[0].split("_")[0]
    assert queued == [f"{job2}_0 PENDING"]  # one task: only the missing series
    assert slurm.run("scontrol", "release", job2).returncode == 0
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "6 were in the store, 2 measured now (0 failed), 0 missing" in out
    df = ResultsStore.open(results).measurements(dedupe=False)
    assert len(df) == 8 and not df.duplicated(["cell_key", "rep"]).any()
    redone = df[~df["measurement_id"].isin(first["measurement_id"])]
    assert set(redone["cell_key"]) == lost
    assert redone["run_id"].nunique() == 1 and set(redone["run_id"]) != set(first["run_id"])
    assert _queued(slurm) == []


@pytest.mark.parametrize(
    ("executor", "command", "package"),
    [
        ("slurm", "sbatch", "Slurm's client commands, Debian slurm-client"),
        ("htcondor", "condor_submit", "HTCondor's tools"),
    ],
)
def test_a_missing_batch_system_is_one_line_naming_the_command(
    tmp_path: Path, executor: str, command: str, package: str
) -> None:
    camp = tmp_path / "s8.toml"
    camp.write_text(CAMPAIGN)
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    p = _cli(["run", str(camp), "-o", str(tmp_path / "res"), "--executor", executor], env)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert out == ""
    assert err == (
        f"cvmfs-modelio: executor {executor}: {command} not found on PATH "
        f"(install {package}, or run with --executor local)\n"
    )
    assert not (tmp_path / "res").exists()  # refused before the store is made
