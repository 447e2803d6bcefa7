"""A whole campaign run: open the store, work out what is missing, hand it to an executor.

:func:`execute` is what ``cvmfs-modelio run`` does: it opens (or creates) the results
store, takes its lock, cleans up after a previous run that was killed (its scratch
directory, mounts and orphaned part files), expands the campaign into cells, drops every
(cell, repetition) the store already holds, and lets the chosen executor measure the rest.
A rerun after an interrupt therefore measures exactly the missing repetitions.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cvmfs_modelio.campaign.cells import Cell, expand, pending
from cvmfs_modelio.campaign.executors import get_executor
from cvmfs_modelio.campaign.reaper import Guardian, cleanup_workdir, make_workdir
from cvmfs_modelio.campaign.runner import NullProgress, Progress, RunContext, RunStats, new_run_id
from cvmfs_modelio.campaign.spec import CampaignSpec
from cvmfs_modelio.campaign.store import ResultsStore, utc_now
from cvmfs_modelio.core.errors import UsageError


@dataclass
class RunSummary:
    """What a run found and did (counts of measurements = cell x repetition)."""

    store: Path
    run_id: str
    executor: str
    cells: int
    measurements_declared: int
    done_before: int
    stats: RunStats = field(default_factory=RunStats)
    campaign_changed: bool = False
    cleaned_previous: bool = False
    orphans_removed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.measurements_declared - self.done_before - self.stats.measured


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def preflight(spec: CampaignSpec) -> list[str]:
    """Refuse a campaign this machine cannot run before anything is created; notes to print.

    Checks FUSE for the emulated target and that every model file is readable (an ONNX
    file's external data found).
    """
    from cvmfs_modelio.campaign.modelsrc import files_of

    notes: list[str] = []
    if spec.target.kind == "emulated":
        from cvmfs_modelio.campaign.experiments import fuse_unavailable_reason

        reason = fuse_unavailable_reason()
        if reason is not None:
            raise UsageError(f"cannot mount the emulated CVMFS: {reason}")
    for m in spec.models:
        if m.kind == "file" and m.path is not None:
            files_of(m.path)
    return notes


def plan(
    spec: CampaignSpec, store: ResultsStore, retry_failed: bool = False
) -> tuple[list[Cell], int]:
    """(every cell of the campaign, measurements already done of them)."""
    cells = expand(spec)
    keys = {c.key for c in cells}
    done = {(k, r) for k, r in store.done(retry_failed) if k in keys and r < spec.reps}
    return cells, len(done)


def execute(
    spec: CampaignSpec,
    results: str | os.PathLike[str],
    *,
    resume: bool = False,
    executor: str | None = None,
    retry_failed: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Run the campaign into the store at ``results`` (see the module docstring)."""
    ex = get_executor(executor or spec.executor)
    check = getattr(ex, "preflight", None)  # a batch system that is not there: refused here
    if callable(check):
        check(spec)
    notes = preflight(spec)
    store, changed = ResultsStore.open_for_run(results, spec.canonical(), resume)
    run_id = new_run_id()
    wd = make_workdir(workdir)
    guardian = Guardian(wd)
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "workdir": str(wd),
        "run_id": run_id,
        "started_utc": utc_now(),
    }
    try:
        with store.lock(owner) as previous:
            summary = RunSummary(store.root, run_id, ex.name, 0, 0, 0, campaign_changed=changed)
            summary.notes = notes
            for n in notes:
                (progress or NullProgress()).note(n)
            if previous and previous.get("workdir") and not _alive(previous.get("pid")):
                summary.cleaned_previous = cleanup_workdir(previous["workdir"])
            summary.orphans_removed = store.remove_orphans()
            cells, done_before = plan(spec, store, retry_failed)
            summary.cells = len(cells)
            summary.measurements_declared = len(cells) * spec.reps
            summary.done_before = done_before
            work = pending(cells, spec.reps, store.done(retry_failed))
            ctx = RunContext(
                campaign=spec.name,
                run_id=run_id,
                executor=ex.name,
                workdir=wd,
                timeout_s=spec.timeout_s,
                progress=progress or NullProgress(),
            )
            if work:
                summary.stats = ex.run(spec, work, store, ctx)
            return summary
    finally:
        cleanup_workdir(wd)
        guardian.release()
