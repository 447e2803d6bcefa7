"""What the batch executors write: how cells are split, the sbatch script, the HTCondor
submit description (parsed by the ``htcondor`` bindings, which need no pool; a real
HTCondor submission cannot run here), the manifest a task reads, the ``[batch]`` table."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmfs_modelio.campaign.cells import CellWork, expand, pending, series
from cvmfs_modelio.campaign.executors import executor_names
from cvmfs_modelio.campaign.executors._batch import read_share, split, write_manifest
from cvmfs_modelio.campaign.executors.htcondor import submit_description
from cvmfs_modelio.campaign.executors.slurm import batch_script, parse_job_states
from cvmfs_modelio.campaign.runner import RunContext
from cvmfs_modelio.campaign.spec import load_campaign, parse_campaign
from cvmfs_modelio.campaign.store import ResultsStore
from cvmfs_modelio.core.errors import UsageError

BASE = """
[campaign]
name = "b"
reps = 2
[[models]]
kind = "synthetic"
name = "m"
size = "1MiB"
width = 256
[matrix]
chunking = ["256KiB/512KiB/1MiB", "whole"]
rtt_ms = [0, 1, 5]
cache = ["cold", "warm", "hot"]
loader = ["probe-seq"]
"""


def _spec(tmp_path: Path, extra: str = "") -> object:
    p = tmp_path / "b.toml"
    p.write_text(BASE + extra)
    return load_campaign(p)


def test_batch_executors_are_found_by_name() -> None:
    assert executor_names() == ["htcondor", "local", "slurm"]


@given(tasks=st.integers(0, 20), done=st.sets(st.integers(0, 35), max_size=36))
def test_split_keeps_series_whole_and_every_repetition_once(tasks: int, done: set[int]) -> None:
    spec = parse_campaign(BASE)
    cells = expand(spec)  # 6 series x 3 cache states = 18 cells, 2 reps each
    finished = {(cells[i // 2].key, i % 2) for i in done}
    work = pending(cells, 2, finished)
    shares = split(work, tasks)
    n_series = len(series(work))
    assert len(shares) == (min(n_series, tasks) if tasks else n_series)
    assert all(shares)
    flat = [(w.cell.key, r) for s in shares for w in s for r in w.reps]
    assert sorted(flat) == sorted((w.cell.key, r) for w in work for r in w.reps)
    owner = {w.cell.series_key: i for i, s in enumerate(shares) for w in s}
    for i, s in enumerate(shares):
        assert all(owner[w.cell.series_key] == i for w in s)
        states = [w.cell.cache_state for w in s if w.cell.series_key == s[0].cell.series_key]
        assert states == sorted(states, key=["cold", "warm", "hot"].index)


def test_the_sbatch_script_is_one_array_over_the_manifest(tmp_path: Path) -> None:
    extra = (
        '[batch]\ntasks = 4\nmax_parallel = 2\npartition = "short"\ntime_limit_min = 30\n'
        'submit_args = ["--mem=2G"]\n'
    )
    spec = _spec(tmp_path, extra)
    script = batch_script(tmp_path / "job", tmp_path / "job" / "manifest.json", 4, spec)  # type: ignore[arg-type]
    assert script.splitlines() == [
        "#!/bin/sh",
        "#SBATCH --job-name=cmio-b",
        "#SBATCH --array=0-3%2",
        f"#SBATCH --output={tmp_path}/job/task-%a.log",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --export=ALL",
        f"#SBATCH --chdir={tmp_path}/job",
        "#SBATCH --partition=short",
        "#SBATCH --time=30",
        "#SBATCH --mem=2G",
        f"exec {shlex.quote(sys.executable)} -m cvmfs_modelio.campaign.executors._task "
        f'{tmp_path}/job/manifest.json "$SLURM_ARRAY_TASK_ID"',
    ]


def test_scontrol_states_per_array_task() -> None:
    text = (
        "JobId=7 ArrayJobId=5 ArrayTaskId=2 JobName=x JobState=CANCELLED Reason=None\n"
        "JobId=6 ArrayJobId=5 ArrayTaskId=1 JobState=COMPLETED\n"
        "JobId=5 ArrayJobId=5 ArrayTaskId=3-4 JobState=PENDING\n"
    )
    assert parse_job_states(text) == {2: "CANCELLED", 1: "COMPLETED"}


def test_the_htcondor_submit_description_parses_with_the_bindings(tmp_path: Path) -> None:
    htcondor = pytest.importorskip("htcondor2", reason="pip install htcondor (the test extra)")
    extra = (
        "[batch]\ntasks = 3\nmax_parallel = 2\ntime_limit_min = 10\n"
        'submit_args = ["request_memory = 2GB"]\n'
    )
    spec = _spec(tmp_path, extra)
    job, manifest = tmp_path / "job", tmp_path / "job" / "manifest.json"
    sub = htcondor.Submit(submit_description(job, manifest, 3, spec))  # type: ignore[arg-type]
    assert sub.getQArgs() == "3"
    assert dict(sub) == {
        "universe": "vanilla",
        "executable": sys.executable,
        "arguments": f"\"'-m' 'cvmfs_modelio.campaign.executors._task' '{manifest}' '$(Process)'\"",
        "initialdir": str(job),
        "output": f"{job}/task-$(Process).log",
        "error": f"{job}/task-$(Process).err",
        "log": f"{job}/cluster.log",
        "getenv": "true",
        "should_transfer_files": "NO",
        "request_cpus": "1",
        "batch_name": "cmio-b",
        "max_materialize": "2",
        "allowed_job_duration": "600",
        "request_memory": "2GB",
    }
    assert sub.expand("output") == f"{job}/task-0.log"  # $(Process) of the first job


def test_htcondor_refuses_a_slurm_partition(tmp_path: Path) -> None:
    from cvmfs_modelio.campaign.executors.htcondor import EXECUTOR

    spec = _spec(tmp_path, '[batch]\npartition = "short"\n')
    with pytest.raises(UsageError) as e:
        EXECUTOR.preflight(spec)  # type: ignore[arg-type]
    assert str(e.value) == (
        f"{tmp_path / 'b.toml'}: [batch] partition has no meaning for HTCondor "
        f"(use submit_args, e.g. requirements = ...)"
    )


def test_a_task_reads_its_share_of_the_manifest(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "[batch]\ntasks = 2\n")
    store = ResultsStore.create(tmp_path / "res", spec.canonical())  # type: ignore[attr-defined]
    work = pending(expand(spec), 2, set())  # type: ignore[arg-type]
    shares = split(work, 2)
    ctx = RunContext("b", "R1", "slurm", tmp_path, timeout_s=30.0)
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    m = write_manifest(jobdir, spec, store, ctx, shares)  # type: ignore[arg-type]
    for i in (0, 1):
        share = read_share(m, i)
        assert share.task_id == f"R1-000{i}"
        assert share.store == (tmp_path / "res").resolve()
        assert share.spec == dataclasses.replace(spec, source=(tmp_path / "b.toml").resolve())  # type: ignore[type-var]
        assert share.work == shares[i] and all(isinstance(w, CellWork) for w in share.work)
        assert share.timeout_s == 30.0
    with pytest.raises(UsageError) as e:
        read_share(m, 2)
    assert str(e.value) == f"{m}: no task 2 (it lists 2)"
    (jobdir / "bad.json").write_text("{}")
    with pytest.raises(UsageError) as e:
        read_share(jobdir / "bad.json", 0)
    assert str(e.value) == f"{jobdir / 'bad.json'}: not a batch manifest ('schema')"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("tasks = -1", "tasks -1 is not in [0, 10000] (0: one per series)"),
        ("taks = 2", "unknown key"),
        ("poll_s = 0", "poll_s 0.0 is not in [0.1, 600]"),
        ('partition = "a b"', "partition 'a b' must not contain white space"),
        ("submit_args = [1]", "submit_args must be a list of one-line strings, got 1"),
        ("max_parallel = true", "max_parallel must be"),
    ],
)
def test_bad_batch_tables_are_one_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        _spec(tmp_path, f"[batch]\n{body}\n")
    text = str(e.value)
    assert text.startswith(f"{tmp_path / 'b.toml'}: [batch]") and message in text
    assert "\n" not in text
