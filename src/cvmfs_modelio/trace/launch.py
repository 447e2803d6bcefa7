"""Start a program under the LD_PRELOAD tracer (and kernel tracepoints): the ``trace`` command.

Only the standard library is imported here (numpy and the readers live in
:mod:`cvmfs_modelio.trace.tracer`): the tracer's cost as a user feels it is the whole
process, and the command's own start-up is part of it.  Nothing is post-processed after the
program exits; ``trace-info`` and the exports decode what was recorded.

With kernel tracepoints (:mod:`cvmfs_modelio.trace.tracefs`) the instance is set up in a
thread *while the program starts*: the tracer in the program waits at its first open of a
matched file until the set-up is done (a gate file in the trace directory), so nothing that
concerns a traced file is missed and the ~30 ms of set-up hide behind the program's own
start-up.  The instance is deleted in the background after the trace is written.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError

TRACE_SUFFIX = ".cmtr"
DEFAULT_SAMPLE_US = 1000
KERNEL_MODES = ("auto", "on", "off")


def preload_library() -> Path:
    """Path of the installed ``libcmio_preload.so`` (inside the package)."""
    lib = Path(__file__).resolve().parents[1] / "libcmio_preload.so"
    if not lib.is_file():
        raise UsageError(f"{lib}: tracer library not installed (rebuild the package)")
    return lib


def traced_env(
    trace_dir: Path,
    match: Sequence[str] = (),
    sample_us: int = DEFAULT_SAMPLE_US,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment that runs a program under the tracer, writing into ``trace_dir``.

    ``match`` are path prefixes (empty: everything but /proc, /sys and /dev);
    ``sample_us`` is the page-in sampling interval in microseconds (0: only at munmap and exit).
    """
    for m in match:
        if not m.startswith("/") or ":" in m:
            raise UsageError(f"--match {m}: must be an absolute path prefix without ':'")
    if sample_us < 0:
        raise UsageError(f"--sample-us {sample_us}: must be >= 0")
    env = dict(os.environ if base is None else base)
    lib = str(preload_library())
    old = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{lib}:{old}" if old else lib
    env["CMIO_TRACE_DIR"] = str(Path(trace_dir).resolve())
    env["CMIO_TRACE_SAMPLE_US"] = str(sample_us)
    if match:
        env["CMIO_TRACE_MATCH"] = ":".join(match)
    else:
        env.pop("CMIO_TRACE_MATCH", None)
    env.pop("CMIO_TRACE_WARNED", None)
    env.pop("CMIO_TRACE_GATE", None)
    return env


def prepare_trace_dir(path: str | os.PathLike[str]) -> Path:
    """Create the trace directory; refuse one that already holds trace files."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise UsageError(f"{d}: exists and is not a directory")
    if d.is_dir() and any(d.glob(f"*{TRACE_SUFFIX}")):
        raise UsageError(f"{d}: already holds a trace (choose another -o)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{d}: cannot create trace directory: {e.strerror}") from None
    return d


def exit_status(returncode: int) -> int:
    """A shell-style exit status: a child killed by signal N gives 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _spawn(command: Sequence[str], env: dict[str, str]) -> int:
    try:
        return os.posix_spawnp(command[0], list(command), env)
    except FileNotFoundError:
        raise UsageError(f"{command[0]}: command not found") from None
    except PermissionError:
        raise UsageError(f"{command[0]}: permission denied") from None
    except OSError as e:
        raise UsageError(f"{command[0]}: cannot run: {e.strerror}") from None


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 0
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        if os.WIFSIGNALED(status):
            return -os.WTERMSIG(status)


def run_traced(
    command: Sequence[str],
    trace_dir: str | os.PathLike[str],
    match: Sequence[str] = (),
    sample_us: int = DEFAULT_SAMPLE_US,
    kernel: str = "auto",
    *,
    background_cleanup: bool = True,
) -> int:
    """Run ``command`` under the tracer (stdin/stdout/stderr inherited); return its exit status.

    ``kernel``: "auto" records kernel tracepoints (page cache, page faults, FUSE requests)
    when possible (root), "on" also warns on stderr when it is not possible, "off" never
    records them.  ``TRACE/kernel.json`` says which, and why not.
    """
    if not command:
        raise UsageError("trace: no command given (use: trace [options] -- COMMAND ARGS...)")
    if kernel not in KERNEL_MODES:
        raise UsageError(f"--kernel {kernel}: must be auto, on or off")
    d = prepare_trace_dir(trace_dir)
    env = traced_env(d, match, sample_us)
    from cvmfs_modelio.trace import tracefs

    rec: tracefs.KernelRecorder | None = None
    setup: threading.Thread | None = None
    failure: list[str] = []
    gate = d.resolve() / tracefs.GATE_FILE
    if kernel == "off":
        tracefs.write_status(d, {"status": "off", "reason": "disabled (--kernel off)"})
    else:
        reason = tracefs.unavailable_reason()
        if reason is None:
            try:
                rec = tracefs.KernelRecorder(d, match)
            except tracefs.KernelUnavailable as e:
                reason = str(e)
        if reason is not None:
            tracefs.write_status(d, {"status": "unavailable", "reason": reason})
            if kernel == "on":
                sys.stderr.write(f"cvmfs-modelio trace: kernel tracepoints unavailable: {reason}\n")
        else:
            gate.touch()
            env[tracefs.GATE_ENV] = str(gate)

            def arm() -> None:
                assert rec is not None
                try:
                    rec.start()
                except tracefs.KernelUnavailable as e:
                    failure.append(str(e))
                finally:
                    gate.unlink(missing_ok=True)

            setup = threading.Thread(target=arm, name="cmio-kernel-setup", daemon=True)
    # The child gets Ctrl-C from the terminal itself; we only wait for it.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid = -1
    try:
        try:
            pid = _spawn(command, env)
        finally:
            if setup is not None:
                setup.start()
        try:
            rc = _wait(pid)
        except KeyboardInterrupt:
            # SIGTERM to us (the CLI turns it into an exception): pass it on, never leave the
            # traced program running on its own.
            os.kill(pid, signal.SIGTERM)
            _wait(pid)
            raise
    finally:
        signal.signal(signal.SIGINT, old)
        if setup is not None:
            setup.join()
            gate.unlink(missing_ok=True)
        if rec is not None:
            if failure:
                tracefs.write_status(d, {"status": "unavailable", "reason": failure[0]})
                if kernel == "on":
                    sys.stderr.write(
                        f"cvmfs-modelio trace: kernel tracepoints unavailable: {failure[0]}\n"
                    )
            else:
                rec.stop(root_pid=pid if pid > 0 else None)
            rec.remove(background=background_cleanup)
    return exit_status(rc)
