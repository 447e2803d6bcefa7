"""No command follows a model out of its directory.

One ONNX model whose initializer keeps its data in an external file named by ``location``:
absolute, with ``..``, or a symlink in the model's directory that resolves outside it.  The
file it names exists (a "secret" beside the directory), so only the containment check can
stop a reader.  Every command that reads models is run on it as a user would (a child
process): each must exit 2 with one line on stderr that names the offending location, no
traceback, and nothing written where it was asked to write.

``trace`` is not in the list: it runs the user's command and reads no model itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

CLI = [sys.executable, "-m", "cvmfs_modelio.cli"]
LOCATIONS = ["ABSOLUTE", "../secret.bin", "sub/../../secret.bin", "link.bin"]


def hostile_model(root: Path, location: str) -> tuple[Path, str]:
    """``root/models/m.onnx`` naming ``location``; returns (model, the location written)."""
    models = root / "models"
    models.mkdir(parents=True)
    secret = root / "secret.bin"
    secret.write_bytes(np.arange(256, dtype=np.float32).tobytes())
    if location == "ABSOLUTE":
        location = str(secret)
    if location == "link.bin":
        os.symlink("../secret.bin", models / "link.bin")
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[256])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "1024")):
        e = w.external_data.add()
        e.key, e.value = k, v
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [256])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = models / "m.onnx"
    onnx.save(model, str(path))
    return path, location


def _commands(root: Path, model: Path) -> dict[str, list[str]]:
    camp = root / "c.toml"
    camp.write_text(
        '[campaign]\nname = "c"\nreps = 1\n\n[[models]]\n'
        f'path = "{model}"\n\n[target]\nkind = "emulated"\n\n[matrix]\n'
        'chunking = ["whole"]\nrtt_ms = [0]\nbandwidth = ["0"]\ncache = ["warm"]\n'
        'loader = ["ort"]\n'
    )
    return {
        "inspect": ["inspect", str(model)],
        "ort-load": ["ort-load", str(model), "--state", "warm"],
        "models survey": ["models", "survey", str(model.parent)],
        "sim publish": ["sim", "publish", str(model.parent), str(root / "store")],
        "experiment": [
            "experiment",
            "--models",
            str(model),
            "--configs",
            "whole",
            "--reps",
            "1",
        ],
        "run": ["run", str(camp), "-o", str(root / "results")],
    }


COMMANDS = ["inspect", "ort-load", "models survey", "sim publish", "experiment", "run"]


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_location_outside_the_model_directory(
    tmp_path: Path, command: str, location: str
) -> None:
    model, written = hostile_model(tmp_path, location)
    argv = _commands(tmp_path, model)[command]
    r = subprocess.run(
        CLI + argv,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert "Traceback" not in r.stderr, r.stderr
    if command == "models survey":
        # a survey goes on past a model it cannot read: that model is a row with the reason
        assert r.returncode == 0, r.stderr
        (row,) = [ln for ln in r.stdout.splitlines() if "m.onnx" in ln]
        assert written in row and ("outside" in row or "absolute" in row or "'..'" in row), row
        return
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert all(ln.endswith("...") for ln in err[:-1]), err  # progress lines, then one error
    assert err[-1].startswith("cvmfs-modelio: ") and written in err[-1], err[-1]
    why = ("outside", "absolute", "'..'", "leaves the source tree")
    assert any(w in err[-1] for w in why), err[-1]
    for out in ("store", "results"):
        assert not (tmp_path / out).exists() or not any((tmp_path / out).rglob("*.bin"))
