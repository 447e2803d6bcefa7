"""One batch task: ``python -m cvmfs_modelio.campaign.executors._task MANIFEST INDEX``.

Runs task ``INDEX``'s share of a batch manifest (``_batch``) with ``runner.run_cells``
into the store's task sink, in a scratch directory of its own below ``$TMPDIR`` (its own
client caches and mount points), watched by a guardian like a local run.  SIGTERM (what
``scancel`` and ``condor_rm`` send first) unwinds as Ctrl-C does: the series in flight
commits its finished measurements, the mount is stopped, the scratch directory removed.
Exit 0 when every measurement was committed (failed loads included), 2 on bad input,
143 when terminated.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType


class _Lines:
    """Progress as plain lines in the task's log (no terminal there)."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.total = 0
        self.done = 0

    def begin(self, total: int) -> None:
        self.total = total
        print(f"{self.task}: {total} measurements on {socket.gethostname()}", flush=True)

    def status(self, text: str) -> None:
        print(f"{self.task}: {text}", flush=True)

    def advance(self) -> None:
        self.done += 1

    def note(self, text: str) -> None:
        print(f"{self.task}: note: {text}", flush=True)


def _term(signum: int, _frame: FrameType | None) -> None:
    from cvmfs_modelio.core.errors import Interrupted

    raise Interrupted(signum)


def main(argv: list[str]) -> int:
    from cvmfs_modelio.campaign.executors._batch import read_share
    from cvmfs_modelio.campaign.reaper import Guardian, cleanup_workdir, make_workdir
    from cvmfs_modelio.campaign.runner import RunContext, run_cells
    from cvmfs_modelio.campaign.store import ResultsStore
    from cvmfs_modelio.core.errors import UsageError

    if len(argv) != 2 or not argv[1].isdigit():
        sys.stderr.write("usage: python -m cvmfs_modelio.campaign.executors._task MANIFEST INDEX\n")
        return 2
    signal.signal(signal.SIGTERM, _term)
    try:
        share = read_share(Path(argv[0]), int(argv[1]))
        sink = ResultsStore.open(share.store).task_sink(share.task_id)
        wd = make_workdir(os.environ.get("TMPDIR") or None)
    except UsageError as e:
        sys.stderr.write(f"cvmfs-modelio task: {e}\n")
        return 2
    guardian = Guardian(wd)
    progress = _Lines(share.task_id)
    try:
        ctx = RunContext(
            campaign=share.spec.name,
            run_id=share.run_id,
            executor=share.executor,
            workdir=wd,
            timeout_s=share.timeout_s,
            task_id=share.task_id,
            progress=progress,
        )
        stats = run_cells(share.spec, share.work, sink, ctx)
        print(f"{share.task_id}: committed {stats.measured} ({stats.failed} failed)", flush=True)
        return 0
    except UsageError as e:
        sys.stderr.write(f"cvmfs-modelio task: {e}\n")
        return 2
    except KeyboardInterrupt:
        print(f"{share.task_id}: terminated after {progress.done} measurements", flush=True)
        return 143
    finally:
        cleanup_workdir(wd)
        guardian.release()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
