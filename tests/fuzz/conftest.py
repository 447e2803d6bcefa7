"""Fuzz targets: a failure report says how to replay it (the run's seed)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.fuzz._budget import SCALE, SEED


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        report.sections.append(
            (
                "fuzz replay",
                f"CMIO_FUZZ_SEED={SEED} CMIO_FUZZ_SCALE={SCALE:g} "
                f"python -m pytest -q -p no:cacheprovider '{item.nodeid}'",
            )
        )
