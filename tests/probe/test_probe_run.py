"""The probe reads exactly its pattern, every byte equals the file; hints and cache control."""

from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio import _native
from cvmfs_modelio.core.errors import MeasurementError
from cvmfs_modelio.core.events import EVENT_DTYPE, Op, Source
from cvmfs_modelio.probe import probe
from cvmfs_modelio.probe.engine import FADVISE_HINTS, MADVISE_HINTS, PAGE_SIZE, plan
from tests.probe.probe_reference import reference_plan, write_pattern_file, write_synced

MIB = 1 << 20


@pytest.fixture()
def pfile(tmp_path: Path) -> Path:
    """A 3 MiB + 123 B file of the verify pattern (not a multiple of page or block)."""
    return write_pattern_file(tmp_path / "pattern.bin", 3 * MIB + 123)


def offsets(ev: np.ndarray) -> list[tuple[int, int]]:
    return [(int(o), int(n)) for o, n in zip(ev["offset"], ev["length"], strict=True)]


@pytest.mark.parametrize("pattern", ["seq", "reverse", "stride", "rand", "mmap-seq", "mmap-rand"])
@pytest.mark.parametrize("verify", ["file", "pattern"])
def test_every_byte_read_equals_the_file(pfile: Path, pattern: str, verify: str) -> None:
    size = pfile.stat().st_size
    block = 64 * 1024 if not pattern.startswith("mmap") else 2 * PAGE_SIZE
    res = probe(pfile, pattern, block=block, count=300, seed=3, verify=verify)
    s = res.summary
    assert s.verify_bad_bytes == 0 and s.verify_bad_ops == 0
    assert (res.events["aux"] == 0).all()
    assert s.failed_ops == 0
    want = reference_plan(
        pattern, size, block=block, stride=2 * block, count=300, align=block, seed=3
    )
    assert offsets(res.events) == want
    assert (res.events["result"] == res.events["length"]).all()
    assert s.bytes == sum(n for _, n in want)
    assert s.ops == s.ops_done == len(want)


def test_verify_counts_exactly_the_corrupted_bytes(tmp_path: Path) -> None:
    size = 1 * MIB
    path = write_pattern_file(tmp_path / "p.bin", size)
    bad_at = [5, 4096, 70000, 70001, size - 1]
    with open(path, "r+b") as f:
        for off in bad_at:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())
    res = probe(path, "seq", block=64 * 1024, verify="pattern")
    assert res.summary.verify_bad_bytes == len(bad_at)
    assert res.summary.verify_bad_ops == 3  # blocks 0, 1 (70000 and 70001) and the last
    per_op = res.events["aux"]
    assert per_op[0] == 2 and per_op[1] == 2 and per_op[-1] == 1
    assert per_op[2:-1].sum() == 0
    # The same file against itself is clean, and mmap sees the same corruption.
    assert probe(path, "seq", block=64 * 1024, verify="file").summary.verify_bad_bytes == 0
    assert probe(path, "mmap-seq", verify="pattern").summary.verify_bad_bytes == len(bad_at)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=300_000),
    pattern=st.sampled_from(["seq", "reverse", "stride", "rand", "mmap-seq", "mmap-rand"]),
    data=st.data(),
)
def test_runs_match_reference_for_any_file(size: int, pattern: str, data: st.DataObject) -> None:
    block = data.draw(
        st.integers(
            min_value=max(1, size // 200), max_value=size if "rand" in pattern else 2 * size
        )
    )
    stride = data.draw(st.integers(min_value=max(1, size // 200), max_value=3 * size))
    align = data.draw(st.integers(min_value=1, max_value=size))
    seed = data.draw(st.integers(min_value=0, max_value=2**64 - 1))
    threads = data.draw(st.integers(min_value=1, max_value=3))
    with tempfile.TemporaryDirectory() as d:
        path = write_pattern_file(Path(d) / "f.bin", size)
        res = probe(
            path,
            pattern,
            block=block,
            stride=stride,
            count=50,
            align=align,
            seed=seed,
            threads=threads,
            verify="pattern",
        )
    want = reference_plan(
        pattern, size, block=block, stride=stride, count=50, align=align, seed=seed
    )
    assert offsets(res.events) == want
    assert res.summary.verify_bad_bytes == 0
    assert (res.events["result"] == res.events["length"]).all()
    assert res.summary.ops_done == len(want)


def test_events_are_the_event_table(pfile: Path) -> None:
    res = probe(pfile, "seq", block=MIB)
    ev = res.events
    assert ev.dtype == EVENT_DTYPE
    assert ev.flags["C_CONTIGUOUS"] and ev.base is not None  # a view of the native buffer
    assert (ev["source"] == Source.PROBE).all() and (ev["op"] == Op.PREAD).all()
    assert (ev["pid"] == os.getpid()).all()
    assert (ev["err"] == 0).all() and (ev["fd"] >= 0).all() and (ev["file_id"] == 0).all()
    assert (ev["minflt"] == -1).all() and (ev["majflt"] == -1).all()
    assert (ev["duration_ns"] > 0).all()
    t0 = _native.monotonic_ns()
    assert (ev["t_start_ns"] < t0).all()
    assert (np.diff(ev["t_start_ns"]) > 0).all()  # one thread: one op after the other
    assert res.summary.wall_ns >= int(ev["duration_ns"].sum())
    mm = probe(pfile, "mmap-rand", count=10, faults=True)
    assert (mm.events["op"] == Op.MMAP_TOUCH).all()
    assert (mm.events["minflt"] >= 0).all() and (mm.events["majflt"] >= 0).all()


def test_threads_do_each_op_exactly_once(pfile: Path) -> None:
    res = probe(pfile, "rand", block=4096, count=20000, seed=11, threads=4, verify="file")
    want = reference_plan(
        "rand", pfile.stat().st_size, block=4096, count=20000, align=4096, seed=11
    )
    ev = res.events
    assert offsets(ev) == want  # events[i] is op i, whichever thread ran it
    assert res.summary.ops_done == 20000  # the workers together ran 20000 ops: none twice
    assert (ev["t_start_ns"] > 0).all() and (ev["result"] == 4096).all()
    tids = set(ev["tid"].tolist())
    assert 1 <= len(tids) <= 4 and os.getpid() not in tids
    assert res.summary.threads == 4
    assert res.summary.verify_bad_bytes == 0


def test_more_threads_than_ops(pfile: Path) -> None:
    res = probe(pfile, "replay", ranges=[(0, 10), (100, 10)], threads=8)
    assert res.summary.threads == 2 and res.summary.ops_done == 2


def test_replay_reads_the_list_in_order(pfile: Path) -> None:
    size = pfile.stat().st_size
    ranges = [(size - 1, 1), (0, 5), (12345, 70000), (0, size)]
    res = probe(pfile, "replay", ranges=ranges, verify="pattern")
    assert offsets(res.events) == ranges
    assert res.events["result"].tolist() == [1, 5, 70000, size]
    assert res.summary.verify_bad_bytes == 0


def test_cold_evicts_to_zero_resident_pages(pfile: Path) -> None:
    probe(pfile, "seq")  # warm it
    assert _native.probe_resident_pages(str(pfile)).all()
    res = probe(pfile, "seq", cold=True)
    s = res.summary
    assert s.cold_evicted is True and s.cold_left_pages == 0
    assert s.residency_before == 0
    assert s.residency_after == s.total_pages == (pfile.stat().st_size + PAGE_SIZE - 1) // PAGE_SIZE
    assert s.residency_method == "cachestat"


def test_cold_refuses_to_run_when_mapped_pages_stay(pfile: Path) -> None:
    """Pages another mapping holds cannot be evicted: the run is refused, never reported."""
    pages = -(-pfile.stat().st_size // PAGE_SIZE)
    with open(pfile, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for off in range(0, 10 * PAGE_SIZE, PAGE_SIZE):
            _ = m[off]  # map 10 pages into this process: DONTNEED cannot drop them
        with pytest.raises(MeasurementError) as e:
            probe(pfile, "rand", block=4096, count=5, cold=True)
    left = int(str(e.value).split(": cold run refused: ")[1].split()[0])
    assert 10 <= left <= pages
    assert str(e.value) == (
        f"{pfile}: cold run refused: {left} of {pages} pages still in the page cache after "
        "fdatasync (ok) and eviction; is another process mapping or writing it?"
    )


def test_cold_flushes_a_file_just_written(tmp_path: Path) -> None:
    """A file written a moment ago has dirty pages DONTNEED cannot drop: --cold writes
    them back first (fdatasync), so the run is really cold (issue 8: it reported warm
    numbers as cold)."""
    path = tmp_path / "fresh.bin"
    with open(path, "wb") as f:
        f.write(np.random.Generator(np.random.PCG64(3)).bytes(4 << 20))  # no fsync
    res = probe(path, "seq", block=1 << 20, cold=True)
    s = res.summary
    assert s.cold_flush == "ok" and s.cold_evicted is True and s.cold_left_pages == 0
    assert s.residency_before == 0 and s.not_cold is None
    assert s.residency_after == s.total_pages == 1024


def test_mmap_touches_exactly_the_asked_pages(tmp_path: Path) -> None:
    path = write_pattern_file(tmp_path / "m.bin", 64 * PAGE_SIZE + 100)
    ranges = [(3 * PAGE_SIZE + 7, 1), (10 * PAGE_SIZE, 2 * PAGE_SIZE + 1), (64 * PAGE_SIZE + 99, 1)]
    # MADV_RANDOM: no readahead, so only touched pages are read; fault-around may map
    # cached neighbours but never reads new ones.
    res = probe(
        path, "mmap-list", ranges=ranges, cold=True, madvise="random", faults=True, verify="pattern"
    )
    assert res.summary.residency_before == 0
    resident = np.flatnonzero(_native.probe_resident_pages(str(path))).tolist()
    assert resident == [3, 10, 11, 12, 64]
    assert res.events["majflt"].tolist() == [1, 3, 1]
    assert res.summary.residency_after == 5
    assert res.summary.hints == ["madvise(random)=ok"]
    assert res.summary.verify_bad_bytes == 0


def test_mmap_rand_touches_exactly_its_pages(tmp_path: Path) -> None:
    path = write_pattern_file(tmp_path / "m.bin", 256 * PAGE_SIZE)
    res = probe(path, "mmap-rand", count=40, seed=5, cold=True, madvise="random")
    want = {
        o // PAGE_SIZE
        for o, _ in reference_plan(
            "mmap-rand", 256 * PAGE_SIZE, block=PAGE_SIZE, count=40, align=PAGE_SIZE, seed=5
        )
    }
    resident = set(np.flatnonzero(_native.probe_resident_pages(str(path))).tolist())
    assert resident == want
    assert res.summary.residency_after == len(want)
    # 0 pages at the start: cold, whatever the run brought in.
    assert res.summary.not_cold is None


@pytest.mark.parametrize("hint", FADVISE_HINTS)
def test_fadvise_hints_are_applied_and_reported(pfile: Path, hint: str) -> None:
    res = probe(pfile, "seq", fadvise=hint)
    assert res.summary.hints == [f"fadvise({hint})=ok"]


def test_fadvise_dontneed_and_willneed_act(pfile: Path) -> None:
    s = probe(pfile, "rand", block=4096, count=1, cold=True, fadvise="willneed").summary
    assert s.residency_before == s.total_pages  # willneed read the whole (small) file in
    # Evicted, then warmed by the hint: the run is flagged, in the summary and the JSON.
    assert s.cold_evicted is True
    assert s.not_cold == f"{s.total_pages} of {s.total_pages} pages resident at the start"
    assert s.to_dict()["not_cold"] == s.not_cold
    s = probe(pfile, "rand", block=4096, count=1, fadvise="dontneed").summary
    assert s.residency_before == 0


@pytest.mark.parametrize("hint", MADVISE_HINTS)
def test_madvise_hints_are_applied_and_reported(pfile: Path, hint: str) -> None:
    res = probe(pfile, "mmap-seq", madvise=hint, verify="file")
    (h,) = res.summary.hints
    assert h.startswith(f"madvise({hint})=")
    # hugepage on a file mapping may be refused by the kernel; the result says which.
    assert h == f"madvise({hint})=ok" or hint == "hugepage"
    assert res.summary.verify_bad_bytes == 0


def test_untrusted_residency_when_not_root_and_not_writable(tmp_path: Path) -> None:
    d = Path(tempfile.mkdtemp(prefix="probe-untrusted-"))
    try:
        os.chmod(d, 0o755)
        path = write_synced(d / "ro.bin", b"x" * 10000)
        os.chmod(path, 0o644)
        os.seteuid(65534)
        try:
            res = probe(path, "seq", block=4096, cold=True)
        finally:
            os.seteuid(0)
        s = res.summary
        assert s.residency_before == "untrusted" and s.residency_after == "untrusted"
        assert s.cold_evicted is None and s.cold_left_pages is None
        assert s.not_cold == "residency not verifiable (untrusted): cold not guaranteed"
        assert s.bytes == 10000
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def test_sparse_file_above_4gib(tmp_path: Path) -> None:
    size = 5 * (1 << 30) + 13
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(size)
        tail = size - 3 * MIB
        f.seek(tail)
        f.write(b"\xab" * (size - tail))
        f.seek((1 << 32) - 10)
        f.write(b"\xcd" * 20)
        f.flush()
        os.fsync(f.fileno())
    assert path.stat().st_size == size
    ranges = [(size - 1, 1), ((1 << 32) - 10, 20), (size - MIB - 5, MIB + 5), ((1 << 32) + 1, 7)]
    res = probe(path, "replay", ranges=ranges, verify="file")
    assert offsets(res.events) == ranges
    assert res.events["result"].tolist() == [1, 20, MIB + 5, 7]
    assert res.summary.verify_bad_bytes == 0
    mm = probe(path, "mmap-list", ranges=ranges, verify="file")
    assert mm.summary.verify_bad_bytes == 0 and offsets(mm.events) == ranges
    st_ = probe(path, "stride", block=MIB, stride=1 << 30, verify="file", cold=True)
    assert offsets(st_.events) == [*[(i << 30, MIB) for i in range(5)], (5 << 30, 13)]
    assert st_.summary.cold_evicted is True
    rnd = probe(path, "rand", block=4096, count=2000, seed=9, verify="file")
    assert rnd.summary.verify_bad_bytes == 0
    assert int(rnd.events["offset"].max()) > 1 << 32
    assert offsets(rnd.events) == reference_plan(
        "rand", size, block=4096, count=2000, align=4096, seed=9
    )
    rev = plan("reverse", size, block=1 << 30)
    assert [(int(o), int(n)) for o, n in rev] == [(5 << 30, 13)] + [
        (i << 30, 1 << 30) for i in range(4, -1, -1)
    ]


def test_mincore_and_cachestat_agree(tmp_path: Path) -> None:
    path = write_pattern_file(tmp_path / "r.bin", 100 * PAGE_SIZE)
    ranges = [(7 * PAGE_SIZE, 1), (50 * PAGE_SIZE + 3, PAGE_SIZE)]  # pages 7, 50, 51
    a = probe(path, "mmap-list", ranges=ranges, cold=True, madvise="random", residency="mincore")
    assert a.summary.residency_method == "mincore"
    assert a.summary.residency_before == 0 and a.summary.cold_evicted is True
    assert a.summary.residency_after == 3
    b = probe(path, "replay", ranges=[(0, 1)], fadvise="random")
    assert b.summary.residency_method == "cachestat"
    assert b.summary.residency_before == 3
    assert np.flatnonzero(_native.probe_resident_pages(str(path))).tolist() == [0, 7, 50, 51]


def test_list_for_a_pattern_without_one_is_refused(pfile: Path) -> None:
    from cvmfs_modelio.core.errors import UsageError

    with pytest.raises(UsageError, match="applies to replay and mmap-list only"):
        probe(pfile, "seq", ranges=[(0, 1)])
    with pytest.raises(UsageError, match="unknown residency method 'x'"):
        probe(pfile, "seq", residency="x")
