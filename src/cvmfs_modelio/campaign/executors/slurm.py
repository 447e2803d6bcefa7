"""The ``slurm`` executor: the cells as one ``sbatch`` job array (see ``_batch``).

The batch script (``RESULTS/batch/<run id>/task.sbatch``) runs task
``$SLURM_ARRAY_TASK_ID`` of the manifest; ``[batch]`` of the campaign file gives the
number of tasks, ``--array=...%max_parallel``, ``--partition``, ``--time`` and extra
``sbatch`` options.  The submitting process asks ``squeue`` until the job is gone, reads
each task's end state from ``scontrol show job`` (kept by slurmctld for ``MinJobAge``,
300 s by default; no accounting database needed), merges, and on Ctrl-C ``scancel``\\ s
the job before merging what the tasks committed.  ``SLURM_CONF`` and the rest of the
environment reach the tasks as ``sbatch`` passes them (``--export=ALL``).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from cvmfs_modelio.campaign.executors._batch import (
    BatchExecutor,
    require_commands,
    run_command,
    task_argv,
)
from cvmfs_modelio.campaign.spec import CampaignSpec

COMMANDS = ("sbatch", "squeue", "scontrol", "scancel")
_JOB_ID = re.compile(r"^(\d+)(;\S+)?$")


def batch_script(jobdir: Path, manifest: Path, n: int, spec: CampaignSpec) -> str:
    """The ``sbatch`` script of ``n`` array tasks (options as ``#SBATCH`` lines)."""
    b = spec.batch
    array = f"0-{n - 1}" + (f"%{b.max_parallel}" if b.max_parallel else "")
    opts = [
        f"--job-name=cmio-{spec.name}",
        f"--array={array}",
        f"--output={jobdir}/task-%a.log",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--export=ALL",
        f"--chdir={jobdir}",
    ]
    if b.partition:
        opts.append(f"--partition={b.partition}")
    if b.time_limit_min:
        opts.append(f"--time={b.time_limit_min}")
    opts.extend(b.submit_args)
    argv = " ".join(shlex.quote(a) for a in task_argv(manifest, "")[:-1])
    argv += ' "$SLURM_ARRAY_TASK_ID"'
    lines = ["#!/bin/sh", *(f"#SBATCH {o}" for o in opts), f"exec {argv}", ""]
    return "\n".join(lines)


def parse_job_states(text: str) -> dict[int, str]:
    """``scontrol -o show job`` output -> {array task id: JobState}."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        task, state = fields.get("ArrayTaskId", ""), fields.get("JobState", "")
        if task.isdigit() and state:
            out[int(task)] = state
    return out


class Slurm:
    name = "slurm"

    def preflight(self, spec: CampaignSpec) -> None:
        require_commands(self.name, COMMANDS, "Slurm's client commands, Debian slurm-client")
        # a client without a cluster (no slurm.conf, slurmctld down) is refused here, before
        # the results store is made
        run_command(["scontrol", "ping"], f"executor {self.name}")

    def submit(self, jobdir: Path, manifest: Path, n: int, spec: CampaignSpec) -> str:
        script = jobdir / "task.sbatch"
        script.write_text(batch_script(jobdir, manifest, n, spec))
        out = run_command(["sbatch", "--parsable", str(script)], f"executor {self.name}")
        m = _JOB_ID.match(out.strip())
        if m is None:
            raise RuntimeError(f"sbatch --parsable printed {out.strip()!r}, not a job id")
        return m.group(1)

    def active(self, job: str) -> bool:
        p = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%i %T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if p.returncode != 0:
            # slurmctld forgets a finished job after MinJobAge: "Invalid job id specified"
            if "Invalid job id" in p.stderr:
                return False
            raise RuntimeError(f"squeue -j {job} failed: {p.stderr.strip()}")
        return bool(p.stdout.strip())

    def states(self, job: str, n: int) -> dict[int, str]:
        p = subprocess.run(
            ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=60
        )
        return parse_job_states(p.stdout) if p.returncode == 0 else {}

    def cancel(self, job: str) -> None:
        subprocess.run(["scancel", job], capture_output=True, timeout=60, check=False)


EXECUTOR = BatchExecutor(Slurm())
