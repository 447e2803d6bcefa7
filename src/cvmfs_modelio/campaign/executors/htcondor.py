"""The ``htcondor`` executor: the cells as one cluster of ``queue N`` jobs (see ``_batch``).

The submit description (``RESULTS/batch/<run id>/tasks.sub``) runs task ``$(Process)``
of the manifest in the vanilla universe with the submitter's environment (``getenv``),
on a shared file system (``should_transfer_files = NO``: the store and the manifest
must be visible on the execute nodes, as for Slurm).  ``[batch]`` gives the number of
jobs, ``max_materialize`` (``max_parallel``), ``allowed_job_duration`` (``time_limit_min``)
and extra submit lines (``submit_args``; ``partition`` has no HTCondor meaning and is
refused).  ``condor_submit -terse`` submits, ``condor_q`` is asked until the cluster is
gone, ``condor_history`` gives each job's exit, ``condor_rm`` cancels on Ctrl-C.

Tested here: the description, parsed by the ``htcondor`` Python bindings without a pool
(every key and the number of jobs), and the merge, which is the Slurm executor's.  Not
tested here: a real submission (no HTCondor pool runs on this machine).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from cvmfs_modelio.campaign.executors._batch import (
    BatchExecutor,
    require_commands,
    run_command,
    task_argv,
)
from cvmfs_modelio.campaign.spec import CampaignSpec
from cvmfs_modelio.core.errors import UsageError

COMMANDS = ("condor_submit", "condor_q", "condor_history", "condor_rm")
_TERSE = re.compile(r"^(\d+)\.\d+\s*-\s*\d+\.\d+\s*$")
_STATUS = {1: "PENDING", 2: "RUNNING", 3: "CANCELLED", 4: "COMPLETED", 5: "HELD", 6: "FAILED"}


def _quote_args(args: list[str]) -> str:
    """HTCondor's new argument syntax: double-quoted, single quotes around each argument."""
    return '"' + " ".join("'" + a.replace("'", "''").replace('"', '""') + "'" for a in args) + '"'


def submit_description(jobdir: Path, manifest: Path, n: int, spec: CampaignSpec) -> str:
    """The submit description of ``n`` jobs."""
    b = spec.batch
    exe, *args = task_argv(manifest, "$(Process)")
    lines = [
        "universe = vanilla",
        f"executable = {exe}",
        f"arguments = {_quote_args(args)}",
        f"initialdir = {jobdir}",
        f"output = {jobdir}/task-$(Process).log",
        f"error = {jobdir}/task-$(Process).err",
        f"log = {jobdir}/cluster.log",
        "getenv = true",
        "should_transfer_files = NO",
        "request_cpus = 1",
        f"batch_name = cmio-{spec.name}",
    ]
    if b.max_parallel:
        lines.append(f"max_materialize = {b.max_parallel}")
    if b.time_limit_min:
        lines.append(f"allowed_job_duration = {b.time_limit_min * 60}")
    lines.extend(b.submit_args)
    lines.append(f"queue {n}")
    return "\n".join(lines) + "\n"


class HTCondor:
    name = "htcondor"

    def preflight(self, spec: CampaignSpec) -> None:
        if spec.batch.partition:
            raise UsageError(
                f"{spec.source}: [batch] partition has no meaning for HTCondor "
                f"(use submit_args, e.g. requirements = ...)"
            )
        require_commands(self.name, COMMANDS, "HTCondor's tools")

    def submit(self, jobdir: Path, manifest: Path, n: int, spec: CampaignSpec) -> str:
        sub = jobdir / "tasks.sub"
        sub.write_text(submit_description(jobdir, manifest, n, spec))
        out = run_command(["condor_submit", "-terse", str(sub)], f"executor {self.name}")
        m = _TERSE.match(out.strip().splitlines()[-1] if out.strip() else "")
        if m is None:
            raise RuntimeError(f"condor_submit -terse printed {out.strip()!r}")
        return m.group(1)

    def active(self, job: str) -> bool:
        out = run_command(["condor_q", job, "-af", "ProcId"], f"executor {self.name}")
        return bool(out.strip())

    def states(self, job: str, n: int) -> dict[int, str]:
        p = subprocess.run(
            ["condor_history", job, "-af", "ProcId", "JobStatus", "ExitCode"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out: dict[int, str] = {}
        for line in p.stdout.splitlines() if p.returncode == 0 else []:
            f = line.split()
            if len(f) >= 2 and f[0].isdigit() and f[1].isdigit():
                state = _STATUS.get(int(f[1]), f[1])
                if state == "COMPLETED" and len(f) >= 3 and f[2] not in ("0", "undefined"):
                    state = f"FAILED (exit {f[2]})"
                out[int(f[0])] = state
        return out

    def cancel(self, job: str) -> None:
        subprocess.run(["condor_rm", job], capture_output=True, timeout=60, check=False)


EXECUTOR = BatchExecutor(HTCondor())
