"""No command follows a model out of its directory.

One ONNX model whose initializer keeps its data in an external file named by ``location``:
absolute, with ``..``, or a symlink in the model's directory that resolves outside it.  The
file it names exists (a "secret" beside the directory), so only the containment check can
stop a reader.  Every command that reads models is run on it as a user would (a child
process): each must exit 2 with one line on stderr that names the offending location, no
traceback, and nothing written where it was asked to write.

``prepare`` must also leave everything outside OUT as it was, and OUT without a file.
``kserve-compare`` needs the ``[kserve]`` extra (skipped without it by hand, a failure under
CI=true, where the extra is installed).  ``demo`` reads the user's models from ``--shared``
(the CMS taggers): the hostile model is put where it looks.

``trace`` is not in the list: it runs the user's command and reads no model itself.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cvmfs_modelio.cli.demo import MARKER as DEMO_MARKER
from tests.conftest import missing

CLI = [sys.executable, "-m", "cvmfs_modelio.cli"]
LOCATIONS = ["ABSOLUTE", "../secret.bin", "sub/../../secret.bin", "link.bin"]


def hostile_model(root: Path, location: str, rel: str = "models/m.onnx") -> tuple[Path, str]:
    """``root/rel`` naming ``location``, with the file it names beside the model's directory
    (``secret.bin``); returns (model, the location written)."""
    path = root / rel
    models = path.parent
    models.mkdir(parents=True)
    secret = models.parent / "secret.bin"
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
        "publish-plan": ["publish-plan", str(model.parent), "--json", str(root / "plan.json")],
        "prepare": ["prepare", str(model), str(root / "out"), "--external-data", "--bundle"],
        "kserve-compare": [
            "kserve-compare",
            str(model),
            "--reps",
            "1",
            "--paths",
            "local,cvmfs",
            "--states",
            "hot",
            "--rtt-ms",
            "0",
            "--json",
            str(root / "kserve.json"),
        ],
        # the demo's user models: the CMS taggers it finds under --shared
        "demo": ["demo", "--quick", "-o", str(root / "demo"), "--shared", str(root / "shared")],
    }


COMMANDS = [
    "inspect",
    "ort-load",
    "models survey",
    "sim publish",
    "experiment",
    "run",
    "publish-plan",
    "prepare",
    "kserve-compare",
    "demo",
]

DEMO_MODEL = "shared/models/cms/HLT/ParticleNetAK8/V02/particle-net.onnx"  # cli/demo.CMS_MODELS
# Results each command would write: none may appear.
OUTPUTS = ("store", "results", "plan.json", "out", "kserve.json", "demo")


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` but ``skip`` -> (size, mtime_ns), symlinks not followed."""
    out = {}
    for p in root.rglob("*"):
        if p == skip or skip in p.parents:
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_location_outside_the_model_directory(
    tmp_path: Path, command: str, location: str
) -> None:
    if command == "kserve-compare" and importlib.util.find_spec("kserve") is None:
        missing("kserve is not installed (pip install '.[kserve]')")
    rel = DEMO_MODEL if command == "demo" else "models/m.onnx"
    model, written = hostile_model(tmp_path, location, rel)
    argv = _commands(tmp_path, model)[command]
    before = _tree(tmp_path, tmp_path / "out")
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
    if command != "demo":  # the demo prints its notes and its local probe first
        assert all(ln.endswith("...") for ln in err[:-1]), err  # progress lines, then one error
    assert err[-1].startswith("cvmfs-modelio: ") and written in err[-1], err[-1]
    why = ("outside", "absolute", "'..'", "leaves the source tree")
    assert any(w in err[-1] for w in why), err[-1]
    for out in ("store", "results"):
        assert not (tmp_path / out).exists() or not any((tmp_path / out).rglob("*.bin"))
    for out in OUTPUTS[2:]:
        # no result, not even a partial one (a directory made up front is allowed, and
        # the demo's marker that lets a later demo replace the directory)
        assert not (tmp_path / out).exists() or not [
            p for p in (tmp_path / out).rglob("*") if not p.is_dir() and p.name != DEMO_MARKER
        ], out
    if command == "prepare":
        # nothing written, changed or removed outside OUT (the secret included)
        assert _tree(tmp_path, tmp_path / "out") == before
