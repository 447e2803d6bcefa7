"""The native plans are exactly the patterns' definitions (checked against probe_reference)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio import _native
from cvmfs_modelio.probe.engine import PAGE_SIZE, PATTERNS, plan
from tests.probe.probe_reference import mix, pattern_bytes, random_ops, reference_plan

sizes = st.integers(min_value=1, max_value=1 << 40)
blocks = st.integers(min_value=1, max_value=1 << 24)


def as_list(a: np.ndarray) -> list[tuple[int, int]]:
    return [(int(o), int(n)) for o, n in a]


def test_registry_has_every_pattern() -> None:
    assert sorted(_native.probe_patterns()) == sorted(PATTERNS)


@settings(max_examples=200, deadline=None)
@given(
    pattern=st.sampled_from(["seq", "reverse", "mmap-seq"]),
    size=st.integers(min_value=1, max_value=1 << 40),
    data=st.data(),
)
def test_sequential_patterns_match_reference(pattern: str, size: int, data: st.DataObject) -> None:
    block = data.draw(st.integers(min_value=max(1, size // 5000), max_value=1 << 40))
    got = as_list(plan(pattern, size, block=block))
    assert got == reference_plan(pattern, size, block=block)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(min_value=1, max_value=1 << 40), block=blocks, data=st.data())
def test_stride_matches_reference(size: int, block: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(min_value=max(1, size // 5000), max_value=1 << 41))
    got = as_list(plan("stride", size, block=block, stride=stride))
    assert got == reference_plan("stride", size, block=block, stride=stride)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(min_value=1, max_value=1 << 26), data=st.data())
def test_seq_covers_the_file_exactly_once(size: int, data: st.DataObject) -> None:
    block = data.draw(st.integers(min_value=max(1, size // 5000), max_value=1 << 27))
    ops = plan("seq", size, block=block)
    covered = np.zeros(size, dtype=np.int8) if size <= 1 << 20 else None
    end = 0
    for off, n in ops:
        assert off == end, "no gap, no overlap"
        assert 0 < n <= block
        end = off + n
        if covered is not None:
            covered[off : off + n] += 1
    assert end == size
    if covered is not None:
        assert (covered == 1).all()


@settings(max_examples=200, deadline=None)
@given(
    pattern=st.sampled_from(["rand", "mmap-rand"]),
    size=sizes,
    data=st.data(),
    seed=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_random_matches_reference_and_stays_in_bounds(
    pattern: str, size: int, data: st.DataObject, seed: int
) -> None:
    block = data.draw(st.integers(min_value=1, max_value=min(size, 1 << 24)))
    align = data.draw(st.integers(min_value=1, max_value=1 << 24))
    count = data.draw(st.integers(min_value=1, max_value=300))
    got = plan(pattern, size, block=block, count=count, align=align, seed=seed)
    assert as_list(got) == random_ops(size, block, align, count, seed)
    off = got[:, 0]
    assert (off >= 0).all() and (off + block <= size).all()
    assert (off % align == 0).all()
    assert (got[:, 1] == block).all()


def test_random_is_reproducible_by_seed_and_differs_across_seeds() -> None:
    size = 1 << 30
    a = plan("rand", size, block=4096, count=1000, align=4096, seed=7)
    b = plan("rand", size, block=4096, count=1000, align=4096, seed=7)
    c = plan("rand", size, block=4096, count=1000, align=4096, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # uniform over the file: every eighth of the file gets roughly an eighth of the ops
    hist = np.bincount(a[:, 0] * 8 // size, minlength=8)
    assert hist.min() > 60 and hist.max() < 190


def test_random_uses_every_slot_including_the_last() -> None:
    # 3 slots (offsets 0, 4096, 8192) and 200 draws: each slot appears
    got = plan("rand", 12288, block=4096, count=200, align=4096, seed=1)
    assert set(got[:, 0].tolist()) == {0, 4096, 8192}


def test_splitmix_reference_known_values() -> None:
    # Published splitmix64 outputs for seed 1234567 (state advanced before mixing).
    state = 1234567
    outs = []
    for _ in range(3):
        state = (state + 0x9E3779B97F4A7C15) & ((1 << 64) - 1)
        outs.append(mix(state))
    assert outs == [6457827717110365317, 3203168211198807973, 9817491932198370423]


@given(
    pattern=st.sampled_from(["replay", "mmap-list"]),
    ranges=st.lists(
        st.tuples(st.integers(0, 999), st.integers(1, 1000)).filter(lambda t: t[0] + t[1] <= 1000),
        min_size=1,
        max_size=50,
    ),
)
def test_list_patterns_are_the_list(pattern: str, ranges: list[tuple[int, int]]) -> None:
    got = plan(pattern, 1000, block=1, ranges=np.array(ranges, dtype=np.int64))
    assert as_list(got) == ranges


@pytest.mark.parametrize(
    ("pattern", "kwargs", "message"),
    [
        ("seq", {"block": 0}, "block size must be > 0"),
        ("stride", {"block": 10, "stride": 0}, "stride must be > 0"),
        ("rand", {"block": 10, "count": 0, "align": 1}, "count must be > 0"),
        (
            "rand",
            {"block": 2000, "count": 1, "align": 1},
            "block size 2000 is larger than the file (1000 bytes)",
        ),
        (
            "replay",
            {"block": 1, "ranges": np.array([[990, 11]])},
            "list entry (990, 11) is not inside the file (1000 bytes)",
        ),
        ("nope", {"block": 1}, "unknown pattern 'nope'"),
    ],
)
def test_native_plan_rejects_bad_parameters(
    pattern: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(pattern, 1000, **kwargs)  # type: ignore[arg-type]


@given(offset=st.integers(0, 1 << 40), n=st.integers(0, 100))
def test_native_verify_pattern_matches_reference(offset: int, n: int) -> None:
    assert _native.probe_pattern_bytes(offset, n) == pattern_bytes(offset, n)


def test_page_size_is_the_kernels() -> None:
    assert PAGE_SIZE in (4096, 16384, 65536)
