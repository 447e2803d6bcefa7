"""Request-log arithmetic of the herd: data objects, concurrency, percentiles."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cvmfs_modelio.herd.analysis import data_requests, is_data_object, peak_concurrency, percentile
from cvmfs_modelio.sim.reqlog import RequestLog


def test_only_data_objects_after_the_signal_count() -> None:
    log = RequestLog()
    log.add("/.cvmfspublished", 5, 1, 100, 200)
    log.add("/data/ab/cdefC", 6, 1, 100, 200)  # a catalog
    log.add("/data/ab/cdefP", 9, 3, 1000, 200)  # before the signal
    log.add("/data/ab/cdefP", 10, 3, 1000, 200, aux=1)
    log.add("/data/12/3456", 11, 2, 50, 200)
    r = data_requests(log.snapshot(), since_ns=10)
    assert r.paths == ("/data/ab/cdefP", "/data/12/3456")
    assert r.total_bytes == 1050 and r.hits == 1 and r.n == 2
    assert r.ends_ns.tolist() == [13, 13]
    assert dict(r.per_object()) == {"/data/ab/cdefP": 1, "/data/12/3456": 1}
    assert not is_data_object("/data/ab/cdefC") and is_data_object("/data/ab/cdef")


intervals = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=30,
)


@given(intervals)
def test_peak_concurrency_is_the_most_overlapping_intervals(iv: list[tuple[int, int]]) -> None:
    starts = np.array([a for a, _ in iv], np.int64)
    ends = np.array([b for _, b in iv], np.int64)
    # brute force on half-open [start, max(end, start + 1))
    brute = max((sum(a <= t < max(b, a + 1) for a, b in iv) for t in range(0, 80)), default=0)
    assert peak_concurrency(starts, ends) == brute


def test_percentiles_by_nearest_rank() -> None:
    v = [5, 1, 4, 2, 3]
    assert [percentile(v, q) for q in (0.5, 0.9, 1.0, 0.01)] == [3, 5, 5, 1]
    assert percentile([], 0.5) == -1
