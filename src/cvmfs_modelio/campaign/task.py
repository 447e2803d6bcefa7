"""One batch task: a share of a campaign's cells, measured into the store's task sink.

What a batch executor's job runs on a worker node::

    python -m cvmfs_modelio.campaign.task CAMPAIGN.toml RESULTS TASK_ID CELLS.json [EXECUTOR]

``CELLS.json`` (:func:`write_task_file`) lists the task's cells with their repetitions.
The task measures them with ``runner.run_cells`` (its own scratch directory and guardian,
so each task has its own client cache and mount points) into
``RESULTS/tasks/TASK_ID/`` (``ResultsStore.task_sink``); the executor then calls
``ResultsStore.merge_tasks()``, which moves the parts in atomically and drops duplicates.
Bad input: one line on stderr, exit 2; interrupted: exit 130 (finished series kept).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cvmfs_modelio.campaign.cells import Cell, CellWork
from cvmfs_modelio.campaign.reaper import Guardian, cleanup_workdir, make_workdir
from cvmfs_modelio.campaign.runner import Progress, RunContext, RunStats, new_run_id, run_cells
from cvmfs_modelio.campaign.spec import load_campaign
from cvmfs_modelio.campaign.store import ResultsStore
from cvmfs_modelio.core.atomicio import write_atomic_bytes
from cvmfs_modelio.core.errors import UsageError

TASK_SCHEMA = {"name": "cvmfs-modelio.campaign-task", "version": 1}


def write_task_file(path: str | os.PathLike[str], work: Sequence[CellWork]) -> None:
    """The cells of one task as JSON (atomically)."""
    doc = {
        "schema": TASK_SCHEMA,
        "work": [{"cell": w.cell.to_json(), "reps": list(w.reps)} for w in work],
    }
    write_atomic_bytes(path, (json.dumps(doc, indent=1) + "\n").encode(), fsync=True)


def read_task_file(path: str | os.PathLike[str]) -> list[CellWork]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
        if doc.get("schema") != TASK_SCHEMA:
            raise UsageError(f"{p}: schema {doc.get('schema')!r}, expected {TASK_SCHEMA}")
        return [CellWork(Cell.from_json(w["cell"]), tuple(w["reps"])) for w in doc["work"]]
    except OSError as e:
        raise UsageError(f"{p}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{p}: not a task file ({type(e).__name__})") from None


def run_task(
    campaign: str | os.PathLike[str],
    results: str | os.PathLike[str],
    task_id: str,
    cells_file: str | os.PathLike[str],
    *,
    executor: str = "batch",
    workdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> RunStats:
    """Measure the task's cells into ``RESULTS/tasks/<task_id>/``."""
    spec = load_campaign(campaign)
    store = ResultsStore.open(results)
    if store.campaign.get("name") != spec.name:
        raise UsageError(
            f"{results}: holds campaign {store.campaign.get('name')!r}, not {spec.name!r}"
        )
    work = read_task_file(cells_file)
    known = {m.name for m in spec.models}
    for w in work:
        if w.cell.model not in known:
            raise UsageError(f"{cells_file}: model {w.cell.model!r} is not in {campaign}")
    sink = store.task_sink(task_id)
    wd = make_workdir(workdir)
    guardian = Guardian(wd)
    try:
        ctx = RunContext(
            campaign=spec.name,
            run_id=new_run_id(),
            executor=executor,
            workdir=wd,
            timeout_s=spec.timeout_s,
            task_id=task_id,
        )
        if progress is not None:
            ctx.progress = progress
        return run_cells(spec, work, sink, ctx)
    finally:
        cleanup_workdir(wd)
        guardian.release()


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        sys.stderr.write(
            "usage: python -m cvmfs_modelio.campaign.task CAMPAIGN RESULTS TASK_ID CELLS.json "
            "[EXECUTOR]\n"
        )
        return 2
    try:
        stats = run_task(*argv[:4], executor=argv[4] if len(argv) == 5 else "batch")
    except UsageError as e:
        sys.stderr.write(f"cvmfs-modelio task: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("cvmfs-modelio task: interrupted\n")
        return 130
    sys.stdout.write(json.dumps({"measured": stats.measured, "failed": stats.failed}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
