"""SIGINT/SIGTERM during a real ``demo``/``experiment``: children stopped, mounts gone,
temporary directories removed, what was measured written (``complete: false``), 130/143."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuse


def _procs_with(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (every child inherits our TMPDIR)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in env:
            out.append(int(d.name))
    return out


def _interrupt(tmp_path: Path, argv: list[str], wait_for: str, sig: int) -> tuple[int, str, dict]:
    tmpdir = tmp_path / "private-tmp"
    tmpdir.mkdir()
    out = tmp_path / "r.json"
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    p = subprocess.Popen(
        [sys.executable, "-m", "cvmfs_modelio.cli", *argv, "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert p.stderr is not None and p.stdout is not None
    seen = threading.Event()
    err_lines: list[str] = []

    def read_err() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            err_lines.append(line)
            if wait_for in line:
                seen.set()

    t = threading.Thread(target=read_err, daemon=True)
    t.start()
    stdout_text: list[str] = []
    t_out = threading.Thread(target=lambda: stdout_text.append(p.stdout.read()), daemon=True)  # type: ignore[union-attr]
    t_out.start()
    try:
        assert seen.wait(300), "".join(err_lines)
        # Something is mounted and served now.
        assert str(tmpdir) in Path("/proc/mounts").read_text()
        p.send_signal(sig)
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    t.join(10)
    t_out.join(10)
    err = "".join(err_lines)
    # Nothing left behind: no mount, no temporary directory, no process.
    assert str(tmpdir) not in Path("/proc/mounts").read_text(), err
    # ONNX Runtime keeps a session-id file (.ses) in $TMPDIR by design (uninterrupted
    # runs leave it too); everything of ours is gone.
    assert [f.name for f in tmpdir.iterdir() if f.name != ".ses"] == [], err
    deadline = time.monotonic() + 10
    while _procs_with(f"TMPDIR={tmpdir}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _procs_with(f"TMPDIR={tmpdir}") == [], err
    doc = json.loads(out.read_text())
    return rc, err, doc


def test_sigterm_during_demo(tmp_path: Path) -> None:
    results = tmp_path / "out" / "results"
    argv = ["demo", "--quick", "--size", "4MiB", "--shared", str(tmp_path / "none")]
    argv += ["-o", str(tmp_path / "out")]
    rc, err, doc = _interrupt(tmp_path, argv, "] synthetic-external [", signal.SIGTERM)
    assert rc == 143, err
    assert err.splitlines()[-1] == "cvmfs-modelio: interrupted by SIGTERM"
    assert doc["complete"] is False and doc["interrupted_by"] == "SIGTERM"
    assert doc["schema"] == {"name": "cvmfs-modelio.demo", "version": 3}
    # The local table was done; of the campaign, the synthetic-embedded series (cold, warm,
    # hot) was committed before the external one began, and what the store holds is counted.
    assert len(doc["rows"]) == 18
    from cvmfs_modelio.campaign.store import ResultsStore

    stored = ResultsStore.open(results).measurements()
    assert doc["stored_measurements"] == len(stored) >= 3
    assert "fit" not in doc and "verdict" not in doc


def test_sigint_during_experiment(tmp_path: Path) -> None:
    argv = ["experiment", "--size", "4MiB", "--reps", "1", "--configs", "1MiB/2MiB/4MiB,whole"]
    rc, err, doc = _interrupt(tmp_path, argv, "] external [unchunked] warm 1/1", signal.SIGINT)
    assert rc == 130, err
    assert err.splitlines()[-1] == "cvmfs-modelio: interrupted by SIGINT"
    assert doc["complete"] is False and doc["interrupted_by"] == "SIGINT"
    assert [(r["model"], r["config"]) for r in doc["rows"]] == [
        ("embedded", "1/2/4 MiB"),
        ("external", "1/2/4 MiB"),
        ("embedded", "unchunked"),
    ]
