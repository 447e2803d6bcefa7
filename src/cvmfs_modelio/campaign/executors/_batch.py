"""What the batch executors (``slurm``, ``htcondor``) share: split, submit, wait, merge.

A batch run writes a *manifest* (``RESULTS/batch/<run id>/manifest.json``: the campaign
file's text and path, and each task's share of the pending cells) next to the store, so
every task, on whatever node, reads the same snapshot of the declaration.  The cells are
split by series (``cells.series``: the cold, warm and hot cells of one condition stay in
one task, so warm still follows cold in one mount), round-robin over the tasks.

Each task (``python -m cvmfs_modelio.campaign.executors._task MANIFEST INDEX``) runs its
share with ``runner.run_cells`` in a scratch directory of its own on its node (its own
cache and mount points, cleaned by a guardian as for ``local``) into
``RESULTS/tasks/<run id>-<index>/`` (``ResultsStore.task_sink``): every series is one
atomic part there.  The submitting process waits until the batch system lists none of
the tasks, then merges the committed parts into the store by rename
(``ResultsStore.merge_tasks``, duplicates dropped).  A task that died or was cancelled
leaves its unfinished series uncommitted: they are simply missing, and ``run --resume``
submits exactly those.  The store must therefore be on a file system the nodes share.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow.parquet as pq

from cvmfs_modelio.campaign.cells import Cell, CellWork, series
from cvmfs_modelio.campaign.runner import RunContext, RunStats
from cvmfs_modelio.campaign.spec import CampaignSpec
from cvmfs_modelio.campaign.store import TASKS, ResultsStore
from cvmfs_modelio.core.errors import UsageError

BATCH_DIR = "batch"
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "cvmfs-modelio.batch-manifest"
MAX_DEFAULT_TASKS = 64


def split(work: Sequence[CellWork], tasks: int) -> list[list[CellWork]]:
    """``work`` in at most ``tasks`` shares (0: one per series), whole series round-robin.

    No share is empty; the order inside a share is the order of ``work``.
    """
    groups = series(work)
    n = min(len(groups), tasks if tasks > 0 else MAX_DEFAULT_TASKS)
    shares: list[list[CellWork]] = [[] for _ in range(n)]
    for i, g in enumerate(groups):
        shares[i % n].extend(g)
    return shares


def task_id(run_id: str, index: int) -> str:
    return f"{run_id}-{index:04d}"


def write_manifest(
    jobdir: Path,
    spec: CampaignSpec,
    store: ResultsStore,
    ctx: RunContext,
    shares: list[list[CellWork]],
) -> Path:
    """The snapshot every task reads (see the module docstring)."""
    if spec.source is None:
        raise UsageError(f"executor {ctx.executor}: the campaign must come from a file")
    try:
        text = spec.source.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{spec.source}: cannot read: {e.strerror}") from None
    doc = {
        "schema": {"name": MANIFEST_SCHEMA, "version": 1},
        "store": str(store.root.resolve()),
        "campaign_file": str(spec.source),
        "campaign_text": text,
        "campaign": spec.name,
        "run_id": ctx.run_id,
        "executor": ctx.executor,
        "timeout_s": ctx.timeout_s,
        "tasks": [
            {
                "task_id": task_id(ctx.run_id, i),
                "work": [{"cell": w.cell.to_json(), "reps": list(w.reps)} for w in share],
            }
            for i, share in enumerate(shares)
        ],
    }
    path = jobdir / MANIFEST
    tmp = jobdir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
    return path


@dataclass
class TaskShare:
    """One task's part of a manifest."""

    store: Path
    spec: CampaignSpec
    run_id: str
    executor: str
    timeout_s: float
    task_id: str
    work: list[CellWork] = field(default_factory=list)


def read_share(manifest: Path, index: int) -> TaskShare:
    """Task ``index`` of ``manifest``; UsageError naming the file on any problem."""
    from cvmfs_modelio.campaign.spec import parse_campaign

    try:
        doc = json.loads(manifest.read_text())
        if doc["schema"]["name"] != MANIFEST_SCHEMA:
            raise ValueError(f"schema {doc['schema']!r}")
        tasks = doc["tasks"]
        if not 0 <= index < len(tasks):
            raise UsageError(f"{manifest}: no task {index} (it lists {len(tasks)})")
        t = tasks[index]
        spec = parse_campaign(doc["campaign_text"], Path(doc["campaign_file"]))
        work = [CellWork(Cell.from_json(w["cell"]), tuple(w["reps"])) for w in t["work"]]
        return TaskShare(
            Path(doc["store"]),
            spec,
            doc["run_id"],
            doc["executor"],
            float(doc["timeout_s"]),
            t["task_id"],
            work,
        )
    except OSError as e:
        raise UsageError(f"{manifest}: cannot read the batch manifest: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{manifest}: not a batch manifest ({e})") from None


def task_argv(manifest: Path, index: str) -> list[str]:
    """The command a task runs (``index`` may be a batch-system variable)."""
    return [sys.executable, "-m", "cvmfs_modelio.campaign.executors._task", str(manifest), index]


def require_commands(executor: str, commands: Sequence[str], package: str) -> None:
    """One line naming the first missing command (before anything is created)."""
    for c in commands:
        if shutil.which(c) is None:
            raise UsageError(
                f"executor {executor}: {c} not found on PATH (install {package}, "
                f"or run with --executor local)"
            )


def run_command(argv: Sequence[str], what: str, timeout_s: float = 60.0) -> str:
    """stdout of a batch-system command; UsageError with its own last error line."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise UsageError(f"{what}: {argv[0]} not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{what}: {argv[0]} did not answer within {timeout_s:g} s") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else f"exit status {p.returncode}"
        raise UsageError(f"{what}: {argv[0]} failed: {why}")
    return p.stdout


class BatchSystem(Protocol):
    """What differs between Slurm and HTCondor."""

    name: str

    def preflight(self, spec: CampaignSpec) -> None: ...
    def submit(self, jobdir: Path, manifest: Path, n: int, spec: CampaignSpec) -> str: ...
    def active(self, job: str) -> bool: ...
    def states(self, job: str, n: int) -> dict[int, str]: ...
    def cancel(self, job: str) -> None: ...


def committed_rows(store: ResultsStore) -> int:
    """Measurement rows committed by tasks and not merged yet (progress while waiting)."""
    n = 0
    tasks = store.root / TASKS
    if not tasks.is_dir():
        return 0
    for p in tasks.glob("*/measurements/part-*.parquet"):
        try:
            n += pq.read_metadata(p).num_rows
        except OSError:
            continue
    return n


def _task_rows(store: ResultsStore) -> tuple[int, int]:
    """(rows, failed rows) the tasks committed."""
    rows = failed = 0
    for p in (store.root / TASKS).glob("*/measurements/part-*.parquet"):
        ok = pq.read_table(p, columns=["ok"]).column("ok").to_pylist()
        rows += len(ok)
        failed += sum(not x for x in ok)
    return rows, failed


def _log_tail(jobdir: Path, index: int) -> str:
    for p in (jobdir / f"task-{index}.log", jobdir / f"task-{index}.err"):
        try:
            lines = [ln for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            return lines[-1].strip()
    return ""


class BatchExecutor:
    """An executor that runs the cells as one array of batch tasks (module docstring)."""

    def __init__(self, system: BatchSystem) -> None:
        self.system = system
        self.name = system.name

    def preflight(self, spec: CampaignSpec) -> None:
        self.system.preflight(spec)

    def run(
        self,
        spec: CampaignSpec,
        work: Sequence[CellWork],
        store: ResultsStore,
        ctx: RunContext,
    ) -> RunStats:
        self.system.preflight(spec)
        shares = split(work, spec.batch.tasks)
        jobdir = (store.root / BATCH_DIR / ctx.run_id).resolve()
        jobdir.mkdir(parents=True)
        stats = RunStats(series=len(series(work)))
        job = ""
        interrupted = False
        try:
            manifest = write_manifest(jobdir, spec, store, ctx, shares)
            ctx.progress.begin(sum(len(w.reps) for w in work))
            job = self.system.submit(jobdir, manifest, len(shares), spec)
            ctx.progress.note(f"{self.name} job {job}: {len(shares)} tasks")
            ctx.progress.status(f"{self.name} job {job}: waiting for {len(shares)} tasks")
            seen = 0
            try:
                while self.system.active(job):
                    time.sleep(spec.batch.poll_s)
                    now = committed_rows(store)
                    for _ in range(max(now - seen, 0)):
                        ctx.progress.advance()
                    seen = max(seen, now)
            except KeyboardInterrupt:
                interrupted = True
                self.system.cancel(job)
                deadline = time.monotonic() + 60
                while self.system.active(job) and time.monotonic() < deadline:
                    time.sleep(0.5)
        finally:
            _rows, failed = _task_rows(store)
            merged, _dropped = store.merge_tasks()
            stats.measured = merged
            stats.failed = min(failed, merged)
            try:
                if job:
                    self._report(job, jobdir, shares, store, ctx)
            finally:
                shutil.rmtree(jobdir, ignore_errors=True)
                with_jobs = store.root / BATCH_DIR
                if with_jobs.is_dir() and not any(with_jobs.iterdir()):
                    with_jobs.rmdir()
        if interrupted:
            raise KeyboardInterrupt
        return stats

    def _report(
        self,
        job: str,
        jobdir: Path,
        shares: list[list[CellWork]],
        store: ResultsStore,
        ctx: RunContext,
    ) -> None:
        """A note for every task whose measurements are not all in the store after the merge."""
        have = {(k, r) for k, r, _ok, _t in store.measured()}
        states = self.system.states(job, len(shares))
        for i, share in enumerate(shares):
            total = sum(len(w.reps) for w in share)
            missing = sum((w.cell.key, r) not in have for w in share for r in w.reps)
            if not missing:
                continue
            state = states.get(i, "")
            if not state:
                ran = (jobdir / f"task-{i}.log").exists()
                state = "without a recorded end state" if ran else "never started"
            else:
                state = f"ended {state}"
            tail = _log_tail(jobdir, i)
            ctx.progress.note(
                f"{self.name} task {i} (job {job}) {state}: {missing} of {total} "
                f"measurements missing"
                + (f" ({tail})" if tail else "")
                + "; run again with --resume to measure them"
            )
