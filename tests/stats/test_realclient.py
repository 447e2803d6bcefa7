"""The real client's per-object cost, fitted from the recorded real-vs-emulated cold loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.stats.realclient import fit_real_client

from ..conftest import SHARED

TIMING = SHARED / "testvectors" / "cvmfs-timing" / "cold-real-vs-emulated.json"


@pytest.mark.skipif(not TIMING.is_file(), reason=f"{TIMING} not present")
def test_real_client_pays_more_per_object() -> None:
    fit = fit_real_client(TIMING, n_boot=100)
    assert fit.n_runs == 90
    # the recording's reading: roughly 2-8 ms more per object for the real client
    assert 1.0e6 < fit.extra_per_object_ns < 5.0e6
    lo, hi = fit.extra_per_object_ci
    assert 0 < lo < fit.extra_per_object_ns < hi
    assert fit.rtt_factor["emulated"] == pytest.approx(1.0, abs=0.15)
    assert fit.rtt_factor["real"] > fit.rtt_factor["emulated"]
    assert "more; RTTs per object" in fit.summary()


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{}")
    with pytest.raises(UsageError, match=r"x.json: not a real-vs-emulated timing record"):
        fit_real_client(p)
