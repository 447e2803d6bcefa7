"""Every output path of every command: a path that cannot be used is one line, exit 2,
before any work (issue 8: ``sim publish SRC a_file/sub`` printed a traceback)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.cli import PROG, main
from cvmfs_modelio.core.events import EventLog, FileEntry, Op, empty_events, write_event_file
from cvmfs_modelio.sim.publish import publish


@pytest.fixture(scope="module")
def inputs() -> Iterator[dict[str, Path]]:
    # world-readable: the unwritable-output test runs the commands as nobody
    d = Path(tempfile.mkdtemp(prefix="cmio-inputs-"))
    os.chmod(d, 0o755)
    try:
        yield _make_inputs(d)
    finally:
        shutil.rmtree(d)


def _make_inputs(d: Path) -> dict[str, Path]:
    model = d / "m.bin"
    model.write_bytes(np.random.Generator(np.random.PCG64(1)).bytes(1 << 20))
    ev = empty_events(1)
    ev[0]["op"], ev[0]["length"], ev[0]["result"], ev[0]["file_id"] = Op.READ, 4096, 4096, 0
    trace = d / "t.cmtr"
    write_event_file(trace, EventLog(ev, {0: FileEntry(0, str(model), 1 << 20)}, {}))
    src = d / "src"
    src.mkdir()
    (src / "f").write_bytes(b"abc")
    store = d / "store"
    publish(src, store)
    return {"model": model, "trace": trace, "src": src, "store": store}


# command -> argv with the output path as OUT (the option under test)
COMMANDS: dict[str, Callable[[dict[str, Path], str], list[str]]] = {
    "probe --json": lambda i, out: ["probe", str(i["model"]), "--json", out],
    "probe --events": lambda i, out: ["probe", str(i["model"]), "--events", out],
    "chunks --json": lambda i, out: ["chunks", str(i["model"]), "--json", out],
    "analyze --json": lambda i, out: [
        "analyze",
        str(i["trace"]),
        "--layout",
        "fixed:64KiB",
        "--json",
        out,
    ],
    "sweep --json": lambda i, out: ["sweep", str(i["model"]), "--avg", "64KiB", "--json", out],
    "dedup --json": lambda i, out: ["dedup", str(i["model"]), "--json", out],
    "trace-info --json": lambda i, out: ["trace-info", str(i["trace"]), "--json", out],
    "export -o": lambda i, out: ["export", str(i["trace"]), "--format", "csv", "-o", out],
    "trace -o": lambda i, out: ["trace", "-o", out, "--", "true"],
    "sim publish STORE": lambda i, out: ["sim", "publish", str(i["src"]), out],
    "sim publish --json": lambda i, out: [
        "sim",
        "publish",
        str(i["src"]),
        str(Path(out).parent.parent / "st"),
        "--json",
        out,
    ],
    "sim serve --log": lambda i, out: ["sim", "serve", str(i["store"]), "--log", out],
    "sim serve --proxy-log": lambda i, out: ["sim", "serve", str(i["store"]), "--proxy-log", out],
    "demo --json": lambda i, out: ["demo", "--json", out],
    "experiment --json": lambda i, out: ["experiment", "--json", out],
}
DIRECTORY_OUTPUTS = {"trace -o", "sim publish STORE"}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_parent_is_a_file(
    command: str, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "a_file"
    afile.write_text("x")
    dest = afile / "sub"
    rc, out, err = _run(COMMANDS[command](inputs, str(dest)), capsys)
    assert (rc, out) == (2, "")
    assert err == f"{PROG}: {dest}: {afile} is not a directory\n"


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - DIRECTORY_OUTPUTS))
def test_directory_missing_or_given(
    command: str, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "no" / "r.out"
    rc, out, err = _run(COMMANDS[command](inputs, str(dest)), capsys)
    assert (rc, out, err) == (2, "", f"{PROG}: {dest}: directory {dest.parent} does not exist\n")
    rc, out, err = _run(COMMANDS[command](inputs, str(tmp_path)), capsys)
    assert (rc, out, err) == (2, "", f"{PROG}: {tmp_path}: is a directory\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.root
@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"sim publish --json"}))
def test_unwritable_directory(
    command: str, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """As ``nobody``, in a directory owned by root (mode 0755)."""
    base = Path(tempfile.mkdtemp(prefix="cmio-ro-"))
    try:
        os.chmod(base, 0o755)
        dest = base / "r.out"
        argv = COMMANDS[command](inputs, str(dest))
        os.seteuid(65534)
        try:
            rc, out, err = _run(argv, capsys)
        finally:
            os.seteuid(0)
        assert (rc, out) == (2, ""), err
        assert err == f"{PROG}: {dest}: permission denied (cannot write in {base})\n"
        assert list(base.iterdir()) == []
    finally:
        shutil.rmtree(base)


# command -> argv with a missing input as MISSING
INPUTS: dict[str, Callable[[str], list[str]]] = {
    "probe": lambda m: ["probe", m],
    "chunks": lambda m: ["chunks", m],
    "analyze": lambda m: ["analyze", m, "--layout", "whole"],
    "sweep": lambda m: ["sweep", m, "--avg", "1MiB"],
    "dedup": lambda m: ["dedup", m],
    "trace-info": lambda m: ["trace-info", m],
    "export": lambda m: ["export", m, "--format", "csv"],
    "experiment --models": lambda m: ["experiment", "--models", m],
    "sim publish": lambda m: ["sim", "publish", m, m + ".store"],
    "sim serve": lambda m: ["sim", "serve", m],
}


@pytest.mark.parametrize("command", sorted(INPUTS))
def test_a_missing_input_is_worded_the_same_everywhere(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = str(tmp_path / "nope")
    rc, out, err = _run(INPUTS[command](m), capsys)
    assert (rc, out, err) == (2, "", f"{PROG}: {m}: no such file or directory\n")
