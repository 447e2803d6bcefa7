"""The ``local`` executor: every cell in this process, straight into the store."""

from __future__ import annotations

from collections.abc import Sequence

from cvmfs_modelio.campaign.cells import CellWork
from cvmfs_modelio.campaign.runner import RunContext, RunStats, run_cells
from cvmfs_modelio.campaign.spec import CampaignSpec
from cvmfs_modelio.campaign.store import ResultsStore


class LocalExecutor:
    """Runs the cells in order, sharing setup (``runner.run_cells``); the store is the sink."""

    name = "local"

    def run(
        self,
        spec: CampaignSpec,
        work: Sequence[CellWork],
        store: ResultsStore,
        ctx: RunContext,
    ) -> RunStats:
        return run_cells(spec, work, store, ctx)


EXECUTOR = LocalExecutor()
