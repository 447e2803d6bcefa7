"""ort-load on bad input (issue 9, item 8): one line naming the user's file and the reason
(ONNX Runtime's own where it has one), exit status 2, and nothing left behind: no child
process, no mount, no temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.ort.load import run_load
from tests.ort.conftest import Models

CLI = [sys.executable, "-m", "cvmfs_modelio.cli"]


def children() -> set[int]:
    """Pids of this process's living children (and their children)."""
    me = os.getpid()
    kids: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            kids[int(d)] = int(fields[1])
    out: set[int] = set()
    frontier = {me}
    while frontier:
        frontier = {p for p, pp in kids.items() if pp in frontier} - out
        out |= frontier
    return out


def temp_dirs() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("cvmfs-modelio-load-")}


def tracefs_instances() -> set[str]:
    d = Path("/sys/kernel/tracing/instances")
    return {p.name for p in d.iterdir() if p.name.startswith("cmio-")} if d.is_dir() else set()


def bad_models(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (model, the reason the message must give)."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}
    junk = root / "junk.onnx"
    junk.write_bytes(os.urandom(5000))
    out["not a model"] = (junk, "INVALID_PROTOBUF: Protobuf parsing failed.")
    m = make_model(root / "t" / "whole.onnx", 4 << 20, width=512)
    trunc = root / "truncated.onnx"
    data = m.onnx.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    out["truncated"] = (trunc, "INVALID_PROTOBUF: Protobuf parsing failed.")
    e = make_model(root / "e" / "noext.onnx", 4 << 20, width=512, external_data=True)
    assert e.data is not None
    e.data.unlink()
    out["missing external data"] = (
        e.onnx,
        "External data path does not exist: " + f'"{root}/e/noext.onnx.data"',
    )
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    mm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mm.ir_version = 8
    badop = root / "badop.onnx"
    onnx.save(mm, str(badop))
    out["ORT cannot load"] = (badop, "No Op registered for NoSuchOp with domain_version of 17")
    return out


def test_every_bad_model_is_one_line_with_onnxruntimes_reason(tmp_path: Path) -> None:
    cases = bad_models(tmp_path / "bad")
    before_kids, before_tmp, before_tr = children(), temp_dirs(), tracefs_instances()
    for what, (model, reason) in cases.items():
        r = subprocess.run(
            [*CLI, "ort-load", str(model), "--state", "warm"], capture_output=True, text=True
        )
        assert r.returncode == 2, (what, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("ort-load: ")]
        assert len(lines) == 1, (what, r.stderr)
        assert lines[0].startswith(f"cvmfs-modelio: {model}: ort cannot load it: "), lines[0]
        assert reason in lines[0], (what, lines[0])
        assert "Traceback" not in r.stderr and r.stdout == ""
    assert children() == before_kids
    assert temp_dirs() == before_tmp
    assert tracefs_instances() == before_tr


def test_messages_name_the_users_file_not_the_mount(models: Models, tmp_path: Path) -> None:
    # The same bad model reached through another path (as a mount presents it): the
    # message names what the caller says the file is.
    cases = bad_models(tmp_path / "bad")
    model, _reason = cases["missing external data"]
    with pytest.raises(UsageError) as ei:
        run_load(model, state="warm", display_name="/users/model/noext.onnx")
    msg = str(ei.value)
    assert msg.startswith("/users/model/noext.onnx: ort cannot load it: ")
    assert str(tmp_path) not in msg
    assert 'External data path does not exist: "/users/model/noext.onnx.data"' in msg


def test_usage_errors_before_anything_runs(models: Models, tmp_path: Path) -> None:
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    cases = [
        ([str(tmp_path / "missing.onnx")], f"{tmp_path}/missing.onnx: no such model file"),
        ([str(tmp_path)], f"{tmp_path}: is a directory (give the model file)"),
        ([str(txt)], f"{txt}: unsupported format .txt for --loader ort"),
        (
            [str(models.embedded), "--use-mmap"],
            f"{models.embedded}: --use-mmap: ONNX Runtime cannot map weights embedded",
        ),
        (
            [str(models.embedded), "--loader", "streamer"],
            f"{models.embedded}: --loader streamer needs a .safetensors file",
        ),
        ([str(models.embedded), "--repeat", "0"], "--repeat 0: must be in [1, 1000]"),
        ([str(models.embedded), "--block", "4x"], "--block: cannot parse size '4x'"),
        (
            [str(models.safetensors), "--loader", "safetensors-lazy", "--tensors", "nope"],
            f"{models.safetensors}: safetensors-lazy cannot load it: ",
        ),
        (
            [str(models.embedded), "--json", str(tmp_path / "no" / "x.json")],
            f"{tmp_path}/no/x.json: directory {tmp_path}/no does not exist",
        ),
    ]
    for args, want in cases:
        r = subprocess.run([*CLI, "ort-load", *args], capture_output=True, text=True)
        lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("ort-load: ")]
        assert r.returncode == 2 and len(lines) == 1, (args, r.stderr)
        assert lines[0].startswith(f"cvmfs-modelio: {want}"), (args, lines[0])


def test_a_hanging_child_is_killed_with_its_group(models: Models, tmp_path: Path) -> None:
    before = children()
    with pytest.raises(UsageError, match=r"ort did not finish within 0\.5 s"):
        run_load(models.embedded, state="hot", timeout_s=0.5)
    assert children() == before
