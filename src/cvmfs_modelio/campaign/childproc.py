"""Run one measured child process: wall time, exit status, output and its ``getrusage``.

The child is reaped with ``wait4`` so its CPU times, peak RSS, page faults and block I/O
come from the kernel (what ``/usr/bin/time`` reports, and what the CVMFS benchmark
records).  The child gets ``PR_SET_PDEATHSIG(SIGKILL)``: if the runner is killed, no
loader outlives it.  A timeout or an interrupt kills the child and reaps it before the
exception leaves.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass(frozen=True)
class ChildOutcome:
    """A finished child.  ``start_ns``/``end_ns`` CLOCK_MONOTONIC around spawn and reap."""

    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    start_ns: int
    end_ns: int
    timed_out: bool
    user_ns: int
    system_ns: int
    max_rss_bytes: int
    minor_faults: int
    major_faults: int
    inblock: int
    oublock: int
    voluntary_switches: int
    involuntary_switches: int
    signals: int
    msgsnd: int
    msgrcv: int
    nswap: int

    @property
    def wall_ns(self) -> int:
        return self.end_ns - self.start_ns

    def last_error_line(self) -> str:
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        if self.timed_out:
            return "timed out"
        if lines:
            return lines[-1]
        return f"exited with status {self.returncode}"


def run_child(
    argv: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> ChildOutcome:
    """Run ``argv`` to completion (or ``timeout_s``); output captured via temporary files."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic_ns()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

        timer = threading.Timer(timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            status, ru = _reap(proc)
        except BaseException:
            timer.cancel()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            _reap(proc)
            raise
        end = time.monotonic_ns()
        timer.cancel()
        out.seek(0)
        err.seek(0)
        return ChildOutcome(
            returncode=os.waitstatus_to_exitcode(status),
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            start_ns=start,
            end_ns=end,
            timed_out=timed_out.is_set(),
            user_ns=round(ru.ru_utime * 1e9),
            system_ns=round(ru.ru_stime * 1e9),
            max_rss_bytes=int(ru.ru_maxrss) * 1024,  # Linux reports KiB
            minor_faults=int(ru.ru_minflt),
            major_faults=int(ru.ru_majflt),
            inblock=int(ru.ru_inblock),
            oublock=int(ru.ru_oublock),
            voluntary_switches=int(ru.ru_nvcsw),
            involuntary_switches=int(ru.ru_nivcsw),
            signals=int(ru.ru_nsignals),
            msgsnd=int(ru.ru_msgsnd),
            msgrcv=int(ru.ru_msgrcv),
            nswap=int(ru.ru_nswap),
        )


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, resource.struct_rusage]:
    """wait4 the child (its rusage), and tell Popen it is gone so it never waits again."""
    _pid, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return status, ru
