"""Child server processes (nginx, squid) that never outlive us.

Each runs in its own session (process group), gets SIGTERM if the thread that started it
dies (``PR_SET_PDEATHSIG``), and ``stop`` signals the whole group (TERM, then KILL), so
no worker or helper process is ever orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Daemon:
    """A non-daemonising server process with its output in ``output``."""

    def __init__(self, name: str, argv: list[str], output: Path) -> None:
        self.name = name
        self.argv = argv
        self.output = output
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def tail(self, n: int = 3) -> str:
        try:
            lines = self.output.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def wait_port(self, port: int, timeout_s: float = 15.0) -> None:
        """Wait until 127.0.0.1:``port`` accepts connections; RuntimeError if the process exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not listen on port {port} in {timeout_s} s")
            time.sleep(0.02)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``; reap the leader."""
        p = self.proc
        if p is None:
            return
        pgid = p.pid  # session leader: its pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        p.wait()
        self.proc = None


class ServerProcess:
    """A server daemon on 127.0.0.1 with its own temp dir (config, logs, cache).

    ``port`` 0: a free one, found when it starts (see :func:`start_listening`).
    """

    def __init__(self, tmp_prefix: str, port: int = 0) -> None:
        self.requested_port = port
        self.port = 0
        self.tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix))
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def cleanup(self) -> None:
        """Remove the temp dir (after :meth:`stop`)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_listening(
    requested_port: int,
    launch: Callable[[int], Daemon],
    error_log: Callable[[], str],
    explain: Callable[[str], str],
    timeout_s: float = 15.0,
) -> tuple[int, Daemon]:
    """Start a server with ``launch(port)`` and wait until it listens on 127.0.0.1.

    ``requested_port`` 0 picks a free port, and tries again (5 times in all) when another
    process took it first ("Address already in use" in ``error_log()``).  On failure:
    RuntimeError with the line ``explain(error_log())`` picks (else the output's tail).
    Returns the port and the running daemon.
    """
    attempts = 1 if requested_port else 5
    for attempt in range(attempts):
        port = requested_port or free_port()
        daemon = launch(port)
        try:
            daemon.wait_port(port, timeout_s)
            return port, daemon
        except RuntimeError as e:
            log = error_log()
            tail = daemon.tail()
            daemon.stop()
            if "Address already in use" in log and attempt + 1 < attempts:
                continue
            raise RuntimeError(f"{e}: {explain(log) or tail}") from None
    raise AssertionError("unreachable")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
