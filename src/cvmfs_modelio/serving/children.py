"""The two measured children, started and stopped from here: KServe's model server
(:mod:`.kserve_server`) until its first v2 answer, and KServe's storage initializer
(:mod:`.storage_init`).  Each runs in its own session and is killed with its whole process
group before the call returns, whatever happens; its proxy variables are cleared so that
loopback traffic never goes to a proxy (``requests`` honours them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from cvmfs_modelio.core.errors import MeasurementError, UsageError
from cvmfs_modelio.serving import sockets, v2
from cvmfs_modelio.serving.params import POLL_S, PROXY_VARS


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=30)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


@dataclass
class ServerStart:
    """What one start of the model server gave (times in ns)."""

    started_ns: int
    answered_ns: int
    import_ns: int
    session_ns: int
    first_inference_ns: int
    outputs: dict[str, npt.NDArray[Any]]
    listen: list[sockets.Listener]
    polls: int


class Clean:
    """Turns child messages into the user's words: every temporary path -> the user's."""

    def __init__(self, display: dict[str, str]) -> None:
        self.display = display

    def __call__(self, msg: str) -> str:
        import re

        from cvmfs_modelio.ort.load import _clean_message

        # The child says "InvalidGraph: [ONNXRuntimeError] : 10 : ..."; ORT's code suffices.
        msg = re.sub(r"^\w+: (?=\[ONNXRuntimeError\])", "", msg.strip())
        return _clean_message(msg, self.display)


def start_server(
    model_file: Path,
    name: str,
    work: Path,
    body: bytes,
    *,
    threads: int,
    timeout_s: float,
    clean: Callable[[str], str],
    user_name: str,
) -> ServerStart:
    """Start KServe's ModelServer on ``model_file`` and wait for its first answer.

    The child is killed (its whole process group) before this returns, whatever happens.
    """
    marks = work / "marks.json"
    err_path = work / "server.stderr"
    with contextlib.suppress(FileNotFoundError):
        marks.unlink()
    spec = {"model": str(model_file), "name": name, "marks": str(marks), "threads": threads}
    argv = [sys.executable, "-m", "cvmfs_modelio.serving.kserve_server", json.dumps(spec)]
    path = v2.infer_path(name)
    with open(err_path, "wb") as err:
        started = time.monotonic_ns()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=work,
            env=_child_env(),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        port: int | None = None
        polls = 0
        while True:
            if proc.poll() is not None:
                why = _last_line(err_path.read_text(errors="replace"))
                raise UsageError(
                    f"{user_name}: the KServe model server exited with status "
                    f"{proc.returncode}: {clean(why) or 'no message'}"
                )
            if time.monotonic() > deadline:
                raise UsageError(
                    f"{user_name}: no inference answered within {timeout_s:g} s of the "
                    "model server's start"
                )
            # The port opens only after model.load(): until the marks exist, a stat is all.
            if port is None and marks.exists():
                found = sockets.listeners(proc.pid)
                if found:
                    port = found[0].port
            if port is not None:
                t0 = time.monotonic_ns()
                try:
                    status, answer = v2.post(port, path, body, timeout_s)
                except OSError:
                    status, answer = 0, b""
                t1 = time.monotonic_ns()
                if status == 200:
                    break
                if status not in (0, 503):
                    raise UsageError(
                        f"{user_name}: the model server answered {status} to the first "
                        f"inference: {clean(answer.decode(errors='replace'))[:300]}"
                    )
            polls += 1
            time.sleep(POLL_S)
        listen = sockets.listeners(proc.pid)
        try:
            outputs = v2.parse_response(answer)
        except ValueError as e:
            raise MeasurementError(
                f"{user_name}: the first answer is not a v2 response: {e}"
            ) from None
        m = json.loads(marks.read_text())
    finally:
        _kill_group(proc)
    wide = [s for s in listen if not s.loopback]
    if wide or port not in {s.port for s in listen}:
        where = ", ".join(f"{s.address}:{s.port}" for s in listen) or "nothing"
        raise MeasurementError(
            f"{user_name}: the model server must listen on 127.0.0.1 only, it listened on {where}"
        )
    return ServerStart(
        started_ns=started,
        answered_ns=t1,
        import_ns=int(m["imported_ns"]) - started,
        session_ns=int(m["load_ns"]),
        first_inference_ns=t1 - t0,
        outputs=outputs,
        listen=listen,
        polls=polls,
    )


def run_storage_initializer(
    out_dir: Path,
    uris: Sequence[str],
    timeout_s: float,
    clean: Callable[[str], str],
    user_name: str,
) -> tuple[int, int, dict[str, Any]]:
    """KServe's download into ``out_dir``: (start ns, end ns, the child's document with
    ``files_bytes`` {file: bytes}, ``imported_ns`` and ``downloaded_ns``)."""
    argv = [sys.executable, "-m", "cvmfs_modelio.serving.storage_init", str(out_dir), *uris]
    t0 = time.monotonic_ns()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
        start_new_session=True,
    )
    try:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise UsageError(
                f"{user_name}: the storage initializer did not finish within {timeout_s:g} s"
            ) from None
    finally:
        _kill_group(proc)
    t1 = time.monotonic_ns()
    if proc.returncode != 0:
        why = clean(_last_line(err.decode(errors="replace")))
        raise UsageError(f"{user_name}: the KServe storage initializer failed: {why}")
    doc: dict[str, Any] = json.loads(_last_line(out.decode()))
    return t0, t1, doc
