"""Executors: who runs a campaign's cells (this process, or a batch system's jobs).

An executor gets the pending cells (``cells.CellWork``: a cell and its missing
repetitions), the campaign and the results store, and runs them; results reach the store
as atomic part files, directly (``local``) or through per-task sinks
(``ResultsStore.task_sink``) that ``ResultsStore.merge_tasks`` moves in by rename.  What a
task does with its share of cells is ``runner.run_cells``; a batch executor only decides
how the cells are split, submitted and merged.

Each module of this package that defines ``EXECUTOR`` (an object with a ``name`` and the
:class:`Executor` method) is one executor, found by name: adding Slurm or HTCondor is a new
file here, not an edit of the runner.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Sequence
from typing import Protocol

from cvmfs_modelio.campaign.cells import CellWork
from cvmfs_modelio.campaign.runner import RunContext, RunStats
from cvmfs_modelio.campaign.spec import CampaignSpec
from cvmfs_modelio.campaign.store import ResultsStore
from cvmfs_modelio.core.errors import UsageError


class Executor(Protocol):
    """Runs cells into a store."""

    name: str

    def run(
        self,
        spec: CampaignSpec,
        work: Sequence[CellWork],
        store: ResultsStore,
        ctx: RunContext,
    ) -> RunStats:
        """Measure ``work`` and commit every result to ``store`` (atomically, per batch)."""
        ...


@functools.cache
def _executors() -> dict[str, Executor]:
    out: dict[str, Executor] = {}
    for m in pkgutil.iter_modules(__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{m.name}")
        ex = getattr(mod, "EXECUTOR", None)
        if ex is not None:
            out[ex.name] = ex
    return out


def executor_names() -> list[str]:
    return sorted(_executors())


def get_executor(name: str) -> Executor:
    """The executor ``name``; UsageError naming the closest one otherwise."""
    from cvmfs_modelio.campaign.spec import closest

    found = _executors()
    if name not in found:
        names = executor_names()
        raise UsageError(
            f"unknown executor {name!r}{closest(name, names)}; available: {', '.join(names)}"
        )
    return found[name]
