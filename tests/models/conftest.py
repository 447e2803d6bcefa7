"""Fixtures for the model tests: the real models in ../shared and small generated kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED
from tests.fuzz.conftest import pytest_runtest_makereport  # noqa: F401 (replay line on failure)

MODELS = SHARED / "models"
FORMATS = MODELS / "cms-formats"
MINILM = MODELS / "minilm"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (../shared beside the checkout)")
    return path
