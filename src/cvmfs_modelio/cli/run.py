"""``cvmfs-modelio run CAMPAIGN.toml``: execute a declared campaign into a results store.

Expands the campaign's matrix into cells, skips every (cell, repetition) the results store
already holds, and measures the rest (``cvmfs_modelio.campaign.execute``).  Progress goes
to stderr (a bar with ETA on a terminal); Ctrl-C (or SIGTERM) stops after cleaning up,
keeps every finished measurement and says how to continue with ``--resume``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from cvmfs_modelio.campaign.execute import RunSummary, execute, plan
from cvmfs_modelio.campaign.executors import executor_names
from cvmfs_modelio.campaign.spec import load_campaign
from cvmfs_modelio.campaign.store import ResultsStore
from cvmfs_modelio.campaign.summary import HEADER, summary_rows
from cvmfs_modelio.cli._progress import progress_for
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.tables import format_table


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "run",
        help="execute a declared campaign (TOML) into a results store",
        description="execute a declared campaign (TOML) into a results store",
    )
    p.add_argument("campaign", metavar="CAMPAIGN.toml", help="the campaign file")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="RESULTS",
        help="results store directory (default: ./<campaign name>-results)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing store: measure only what it does not hold yet (off)",
    )
    p.add_argument(
        "--executor",
        default=None,
        help=f"who runs the cells: {', '.join(executor_names())} "
        "(default: the campaign's executor, else local)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="measure again the repetitions whose load failed (off: a failure counts as done)",
    )
    p.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="scratch space for published stores, mounts and caches (default: $TMPDIR)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print how many cells and repetitions are declared and missing, measure nothing",
    )
    p.set_defaults(func=run)


def _results_dir(args: argparse.Namespace, name: str) -> Path:
    return Path(args.output) if args.output else Path.cwd() / f"{name}-results"


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    spec = load_campaign(args.campaign)
    results = _results_dir(args, spec.name)
    if args.workdir is not None and not Path(args.workdir).is_dir():
        raise UsageError(f"--workdir {args.workdir}: not a directory")
    if args.dry_run:
        return _dry_run(spec, results, args.retry_failed)
    old = signal.signal(signal.SIGTERM, _sigterm)
    try:
        with progress_for() as progress:
            summary = execute(
                spec,
                results,
                resume=args.resume,
                executor=args.executor,
                retry_failed=args.retry_failed,
                workdir=args.workdir,
                progress=progress,
            )
    except KeyboardInterrupt:
        _interrupted(spec, results, args)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    _report(summary, spec.name)
    return 0


def _dry_run(spec: Any, results: Path, retry_failed: bool) -> int:
    declared = 0
    done = 0
    if (results / "store.json").is_file():
        store = ResultsStore.open(results)
        cells, done = plan(spec, store, retry_failed)
    else:
        from cvmfs_modelio.campaign.cells import expand

        cells = expand(spec)
    declared = len(cells) * spec.reps
    print(
        f"campaign {spec.name}: {len(cells)} cells x {spec.reps} repetitions = {declared} "
        f"measurements; {done} in {results}, {declared - done} to measure"
    )
    return 0


def _interrupted(spec: Any, results: Path, args: argparse.Namespace) -> None:
    stored = 0
    declared = 0
    try:
        store = ResultsStore.open(results)
        cells, stored = plan(spec, store, args.retry_failed)
        declared = len(cells) * spec.reps
    except UsageError:
        pass
    sys.stderr.write(
        f"cvmfs-modelio: interrupted: {stored} of {declared} measurements are in {results}; "
        f"`cvmfs-modelio run {args.campaign} -o {results} --resume` measures the other "
        f"{declared - stored}\n"
    )


def _report(summary: RunSummary, name: str) -> None:
    s = summary
    for n in s.notes:
        print(f"note: {n}")
    if s.cleaned_previous:
        print("cleaned up after a previous run of this store that was killed")
    if s.campaign_changed:
        print("the campaign declaration changed since the store was made (recorded in store.json)")
    print(
        f"campaign {name}: {s.cells} cells, {s.measurements_declared} measurements declared; "
        f"{s.done_before} were in the store, {s.stats.measured} measured now "
        f"({s.stats.failed} failed), {max(s.remaining, 0)} missing"
    )
    store = ResultsStore.open(s.store)
    rows = summary_rows(store.measurements())
    if rows:
        print(format_table(HEADER, rows))
    print(f"results: {s.store}")
