"""Models for the ort-load tests: synthetic ONNX (embedded, external data), .ort, safetensors."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.ort.weights import onnx_to_safetensors

MiB = 1 << 20
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="kernel tracepoints and FUSE need root")


@dataclass(frozen=True)
class Models:
    root: Path
    embedded: Path
    external: Path
    data: Path
    safetensors: Path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("ort-models")
    emb = make_model(root / "emb" / "emb.onnx", 12 * MiB, width=512, seed=1)
    ext = make_model(root / "ext" / "ext.onnx", 12 * MiB, width=512, external_data=True, seed=2)
    assert ext.data is not None
    st = onnx_to_safetensors(ext.onnx, root / "ext" / "ext.safetensors")
    return Models(root, emb.onnx, ext.onnx, ext.data, st)


@pytest.fixture(scope="session")
def ort_model(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model converted to ORT format by onnxruntime's own converter."""
    d = tmp_path_factory.mktemp("ort-format")
    src = d / "emb.onnx"
    src.write_bytes(models.embedded.read_bytes())
    r = subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    out = d / "emb.ort"
    if r.returncode != 0 or not out.is_file():
        pytest.skip(f"onnxruntime's converter cannot make .ort here: {r.stderr.strip()[-300:]}")
    return out
