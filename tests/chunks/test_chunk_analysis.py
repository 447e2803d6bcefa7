"""Trace-vs-layout analysis: exact against a brute-force pure-Python reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmfs_modelio.chunks.analysis import (
    READ_OPS,
    FetchModel,
    analyze,
    merged_ranges,
    requests_from_events,
    whole_file_requests,
)
from cvmfs_modelio.chunks.layouts import Layout
from cvmfs_modelio.core.events import EVENT_DTYPE, Op, empty_events


def make_events(rows: list[tuple[int, int, int, int, int, int, int, int]]) -> np.ndarray:
    """rows: (t, op, offset, length, pid, fd, file_id, err)."""
    ev = empty_events(len(rows))
    for i, (t, op, off, ln, pid, fd, fid, err) in enumerate(rows):
        ev[i]["t_start_ns"] = t
        ev[i]["op"] = op
        ev[i]["offset"] = off
        ev[i]["length"] = ln
        ev[i]["pid"] = pid
        ev[i]["fd"] = fd
        ev[i]["file_id"] = fid
        ev[i]["err"] = err
    return ev


def brute_force(
    rows: list[tuple[int, int, int, int, int, int, int, int]],
    offsets: list[int],
    size: int,
    file_id: int,
    rtt: int,
    bw: float,
    in_flight: int | None,
) -> dict[str, object]:
    """Byte by byte and chunk by chunk, with plain Python containers."""
    reads = []
    opened_at = None
    for t, op, off, ln, pid, fd, fid, err in rows:
        if fid != file_id or err != 0:
            continue
        if op in (Op.OPEN, Op.FOPEN, Op.FUSE_OPEN):
            opened_at = t if opened_at is None else min(opened_at, t)
        if op in READ_OPS and off >= 0 and ln > 0 and off < size:
            reads.append((t, off, min(off + ln, size), (pid, fd)))
    reads.sort(key=lambda r: r[0])  # stable: ties keep trace order
    bounds = [*offsets, size]
    chunk_of = {}
    for i in range(len(offsets)):
        for b in range(bounds[i], bounds[i + 1]):
            chunk_of[b] = i
    first: dict[int, tuple[int, tuple[int, int]]] = {}
    order: list[int] = []
    covered: set[int] = set()
    requested = 0
    for t, a, b, h in reads:
        requested += b - a
        for byte in range(a, b):
            covered.add(byte)
            c = chunk_of[byte]
            if c not in first:
                first[c] = (t, h)
                order.append(c)
    costs = []
    if len(offsets) == 1:
        touched = bool(reads) or opened_at is not None
        order = [0] if touched else []
        times = [opened_at if opened_at is not None else reads[0][0]] if touched else []
        fetched = size if touched else 0
        fetch_time = rtt + size * 1e9 / bw if touched else 0.0
    else:
        times = [first[c][0] for c in order]
        sizes = {c: bounds[c + 1] - bounds[c] for c in order}
        fetched = sum(sizes.values())
        costs = [rtt + sizes[c] * 1e9 / bw for c in order]
        if not order:
            fetch_time = 0.0
        else:
            floor = rtt + fetched * 1e9 / bw
            if in_flight is None:
                per: dict[tuple[int, int], float] = {}
                for c, cost in zip(order, costs, strict=True):
                    per[first[c][1]] = per.get(first[c][1], 0.0) + cost
                fetch_time = max(max(per.values()), floor)
            else:
                slots = [0.0] * in_flight
                for cost in costs:
                    slots.sort()
                    slots[0] += cost
                fetch_time = max(max(slots), floor)
    return {
        "order": order,
        "times": times,
        "fetched": fetched,
        "requested": requested,
        "unique": len(covered),
        "n_fetches": len(order),
        "fetch_time": fetch_time,
    }


OPS = [int(o) for o in (*READ_OPS, Op.OPEN, Op.CLOSE, Op.MMAP, Op.LSEEK)]


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], list[int], int]:
    size = draw(st.integers(1, 3000))
    cuts = draw(st.lists(st.integers(1, max(1, size - 1)), max_size=12))
    offsets = sorted({0, *(c for c in cuts if 0 < c < size)})
    n = draw(st.integers(0, 25))
    rows = []
    for _ in range(n):
        rows.append(
            (
                draw(st.integers(0, 50)),  # coarse times: many ties
                draw(st.sampled_from(OPS)),
                draw(st.integers(-1, size + 50)),
                draw(st.integers(-5, 800)),
                draw(st.integers(1, 3)),
                draw(st.integers(-1, 4)),
                draw(st.integers(0, 1)),
                draw(st.sampled_from([0, 0, 0, 5])),
            )
        )
    return rows, offsets, size


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.sampled_from([None, 1, 2, 4]), st.integers(0, 10**7), st.floats(1e3, 1e10))
def test_analysis_matches_brute_force(
    sc: tuple[list[tuple[int, ...]], list[int], int],
    in_flight: int | None,
    rtt: int,
    bw: float,
) -> None:
    rows, offsets, size = sc
    ev = make_events(rows)  # type: ignore[arg-type]
    layout = Layout.from_offsets(offsets, size, "fixed")
    model = FetchModel(rtt_ns=rtt, bandwidth=bw, in_flight=in_flight)
    got = analyze(requests_from_events(ev, size, file_id=0), layout, model)
    ref = brute_force(rows, offsets, size, 0, rtt, bw, in_flight)  # type: ignore[arg-type]
    assert got.chunks_touched.tolist() == ref["order"]
    assert got.first_touch_ns.tolist() == ref["times"]
    assert got.fetched_bytes == ref["fetched"]
    assert got.requested_bytes == ref["requested"]
    assert got.unique_requested_bytes == ref["unique"]
    assert got.n_fetches == ref["n_fetches"]
    assert math.isclose(got.fetch_time_ns, ref["fetch_time"], rel_tol=1e-9, abs_tol=1e-6)  # type: ignore[arg-type]


def test_worked_example() -> None:
    """A 40 MiB file in 4 chunks: read 1 MiB at 0, a 4 KiB pread across chunks 1|2."""
    mib = 1 << 20
    layout = Layout.from_offsets([0, 8 * mib, 15 * mib, 24 * mib], 40 * mib, "xor32")
    rows = [
        (100, Op.OPEN, -1, 0, 7, 3, 0, 0),
        (200, Op.READ, 0, mib, 7, 3, 0, 0),
        (300, Op.PREAD, 15 * mib - 2048, 4096, 7, 3, 0, 0),
        (400, Op.READ, 0, mib, 7, 3, 0, 0),  # again: already fetched
    ]
    model = FetchModel(rtt_ns=10_000_000, bandwidth=100 * mib)
    a = analyze(requests_from_events(make_events(rows), 40 * mib), layout, model)  # type: ignore[arg-type]
    # The pread straddles chunks 1 and 2: both are fetched whole.
    assert a.chunks_touched.tolist() == [0, 1, 2]
    assert a.first_touch_ns.tolist() == [200, 300, 300]
    assert a.fetched_bytes == 24 * mib
    assert a.requested_bytes == 2 * mib + 4096
    assert a.unique_requested_bytes == mib + 4096
    assert a.n_fetches == 3
    assert a.amplification == pytest.approx(24 * mib / (mib + 4096))
    # One handle: 3 round trips + 24 MiB at 100 MiB/s = 30 ms + 240 ms.
    assert a.fetch_time_ns == pytest.approx(270_000_000)
    # Unchunked: the open fetches the whole 40 MiB even if nothing is read.
    whole = Layout.from_offsets([0], 40 * mib, "whole")
    b = analyze(requests_from_events(make_events(rows[:1]), 40 * mib), whole, model)  # type: ignore[arg-type]
    assert (b.fetched_bytes, b.n_fetches, b.first_touch_ns.tolist()) == (40 * mib, 1, [100])
    assert b.fetch_time_ns == pytest.approx(410_000_000)


def test_parallel_handles_and_in_flight() -> None:
    layout = Layout.from_offsets([0, 100, 200, 300], 400, "fixed")
    rows = [(i, Op.PREAD, 100 * i, 10, 1, i % 2, 0, 0) for i in range(4)]
    ev = make_events(rows)  # type: ignore[arg-type]
    req = requests_from_events(ev, 400)
    per_handle = analyze(req, layout, FetchModel(rtt_ns=1000, bandwidth=1e12))
    serial = analyze(req, layout, FetchModel(rtt_ns=1000, bandwidth=1e12, in_flight=1))
    four = analyze(req, layout, FetchModel(rtt_ns=1000, bandwidth=1e12, in_flight=4))
    assert per_handle.fetch_time_ns == pytest.approx(2 * 1000 + 200 * 1e-3)
    assert serial.fetch_time_ns == pytest.approx(4 * 1000 + 400 * 1e-3)
    assert four.fetch_time_ns == pytest.approx(1000 + 400 * 1e-3)


def test_whole_file_requests_and_ranges() -> None:
    layout = Layout.from_offsets([0, 10, 30], 50, "fixed")
    a = analyze(whole_file_requests(50), layout)
    assert a.fetched_bytes == 50 and a.amplification == 1.0 and a.n_fetches == 3
    s, e = merged_ranges(np.array([5, 0, 20, 12]), np.array([8, 6, 25, 20]))
    assert s.tolist() == [0, 12] and e.tolist() == [8, 25]
    assert empty_events(0).dtype == EVENT_DTYPE
