"""Shared test fixtures: paths into ../shared and helpers to recreate test-vector files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CMS_MODELS = SHARED / "models" / "cms"
CHUNK_VECTORS = SHARED / "testvectors" / "cvmfs-chunks"
FETCH_VECTORS = SHARED / "testvectors" / "cvmfs-fetch"
CLIENT_VECTORS = SHARED / "testvectors" / "cvmfs-client"
TIMING_VECTORS = SHARED / "testvectors" / "cvmfs-timing"


def vector_content(vec: dict[str, Any]) -> bytes | None:
    """Recreate the exact bytes a chunk test vector describes (None if it needs a package file)."""
    out = bytearray()
    for part in vec["content"].split(" + "):
        m = re.fullmatch(r"numpy PCG64\((\d+)\) Generator\.bytes\((\d+)\)", part)
        if m:
            out += np.random.Generator(np.random.PCG64(int(m[1]))).bytes(int(m[2]))
            continue
        m = re.fullmatch(r"(\d+) zero bytes", part)
        if m:
            out += bytes(int(m[1]))
            continue
        m = re.fullmatch(r"file (\S+) from the PyPI package (\S+)==\S+ .*", part)
        if m:
            import importlib.resources

            pkg, _, rel = m[1].partition("/")
            try:
                out += (importlib.resources.files(pkg) / rel).read_bytes()
            except (ModuleNotFoundError, FileNotFoundError):
                return None
            continue
        raise ValueError(f"unknown content description {part!r}")
    return bytes(out)


def chunk_vectors() -> list[Path]:
    return sorted(CHUNK_VECTORS.glob("*.json"))


def load_vector(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="session")
def cms_models() -> list[Path]:
    models = sorted(CMS_MODELS.rglob("*.onnx"))
    if not models:
        pytest.skip(f"no CMS models under {CMS_MODELS}")
    return models
