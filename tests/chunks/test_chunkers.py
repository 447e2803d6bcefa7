"""Chunker invariants (all chunkers) and xor32 against a literal reference of the publisher."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cvmfs_modelio import _native
from cvmfs_modelio.chunks.layouts import ChunkSpec, compute_layout
from cvmfs_modelio.core.errors import UsageError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_xor32(data: bytes, mn: int, avg: int, mx: int) -> list[int]:
    """cvmfs-facts.md §1 steps 1-6, literally: reset h at each chunk, warm up, test, cut."""
    size = len(data)
    if size <= mn:
        return [0]
    thr = 0xFFFFFFFF // avg
    m = 0x7FFFFFFF
    offsets = [0]
    last = 0
    while True:
        h = 0
        for p in range(max(last + mn - 32, last), min(last + mn, size)):
            h = ((h << 1) ^ data[p]) & 0xFFFFFFFF
        cut = None
        for p in range(last + mn, min(last + mx, size)):
            h = ((h << 1) ^ data[p]) & 0xFFFFFFFF
            if m - thr < h < m + thr or h == 0xFFFFFFFF:
                cut = p
                break
        if cut is None:
            if last + mx < size:
                cut = last + mx
            else:
                break
        offsets.append(cut)
        last = cut
    return offsets


@st.composite
def contents(draw: st.DrawFn, max_size: int = 40_000) -> bytes:
    """Random, low-entropy and zero-run data: many candidates, none, and hard cuts."""
    n = draw(st.integers(min_value=0, max_value=max_size))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.Generator(np.random.PCG64(seed))
    kind = draw(st.sampled_from(["random", "alphabet", "zeros", "mixed"]))
    if kind == "random":
        return rng.bytes(n)
    if kind == "alphabet":
        return bytes(rng.integers(0, 4, n, dtype=np.uint8) * 0x55)
    if kind == "zeros":
        return bytes(n)
    arr = np.frombuffer(rng.bytes(n), dtype=np.uint8).copy()
    for _ in range(draw(st.integers(0, 4))):
        a = draw(st.integers(0, max(n - 1, 0)))
        arr[a : a + draw(st.integers(1, 5000))] = draw(st.integers(0, 255))
    return arr.tobytes()


@st.composite
def min_avg_max(draw: st.DrawFn, lo: int = 32) -> tuple[int, int, int]:
    mn = draw(st.integers(min_value=lo, max_value=3000))
    avg = draw(st.integers(min_value=mn + 1, max_value=mn + 6000))
    mx = draw(st.integers(min_value=avg + 1, max_value=avg + 12_000))
    return mn, avg, mx


def feed_in_pieces(kind: str, data: bytes, cuts: list[int], **kw: int) -> list[int]:
    c = _native.Chunker(kind, **kw)  # type: ignore[arg-type]
    bounds = [0, *sorted(set(min(x, len(data)) for x in cuts)), len(data)]
    for a, b in itertools.pairwise(bounds):
        c.feed(data[a:b])
    offsets, size = c.finish()
    assert size == len(data)
    return offsets.tolist()


@SETTINGS
@given(contents(), min_avg_max())
def test_xor32_matches_literal_reference(data: bytes, params: tuple[int, int, int]) -> None:
    expected = reference_xor32(data, *params)
    assert _native.xor32_offsets(data, *params).tolist() == expected
    assert _native.xor32_offsets(data, *params, simd=False).tolist() == expected


def check_invariants(offsets: list[int], size: int, mn: int, mx: int) -> None:
    assert offsets[0] == 0
    assert offsets == sorted(set(offsets))
    sizes = np.diff([*offsets, size]).tolist()
    assert sum(sizes) == size  # tiles the file
    assert all(mn <= s <= mx for s in sizes[:-1])
    assert sizes[-1] <= mx or (len(sizes) == 1 and size <= mx)
    if size <= mn:
        assert offsets == [0]


KINDS = ["xor32", "fastcdc", "layout-aware", "fixed"]


def spec_kwargs(kind: str, params: tuple[int, int, int]) -> dict[str, int]:
    mn, avg, mx = params
    if kind == "fixed":
        return {"fixed_size": avg}
    return {"min_size": mn, "avg_size": avg, "max_size": mx}


@SETTINGS
@given(
    st.sampled_from(KINDS),
    contents(),
    min_avg_max(lo=64),
    st.lists(st.integers(0, 40_000), max_size=12),
    st.lists(st.integers(0, 40_000), max_size=40),
)
def test_invariants_all_chunkers(
    kind: str,
    data: bytes,
    params: tuple[int, int, int],
    pieces: list[int],
    preferred: list[int],
) -> None:
    kw = spec_kwargs(kind, params)
    extra: dict[str, list[int]] = {"preferred": preferred} if kind == "layout-aware" else {}
    whole = _native.chunk_offsets(data, kind, **kw, **extra).tolist()  # type: ignore[arg-type]
    mn, mx = (kw["fixed_size"],) * 2 if kind == "fixed" else (params[0], params[2])
    check_invariants(whole, len(data), mn, mx)
    # Determinism, and independence from how the data is fed.
    assert _native.chunk_offsets(data, kind, **kw, **extra).tolist() == whole  # type: ignore[arg-type]
    c = _native.Chunker(kind, **kw, **extra)  # type: ignore[arg-type]
    bounds = [0, *sorted(min(x, len(data)) for x in pieces), len(data)]
    for a, b in itertools.pairwise(bounds):
        c.feed(data[a:b])
    offsets, size = c.finish()
    assert size == len(data)
    assert offsets.tolist() == whole
    if kind == "layout-aware":
        # Every cut is a preferred offset or a hard cut at max.
        for a, b in itertools.pairwise(whole):
            assert b in preferred or b - a == mx


@SETTINGS
@given(
    st.sampled_from(["xor32", "fastcdc", "layout-aware"]),
    min_avg_max(lo=64),
    st.integers(0, 100_000),
    st.integers(0, 255),
)
@example("xor32", (64, 65, 66), 65, 1)  # 0x01 bytes: h = 0xFFFFFFFF, a candidate
@example("xor32", (64, 65, 66), 200, 0)
def test_constant_data_cut_at_exactly_max(
    kind: str, params: tuple[int, int, int], n: int, value: int
) -> None:
    mn, avg, mx = params
    data = bytes([value]) * n
    offsets = _native.chunk_offsets(data, kind, *params).tolist()
    # Hard cuts at every multiple of max that leaves data after it.  Exception (xor32
    # only): a byte value whose steady rolling state (all 32 window bytes equal) is itself
    # a cut candidate, e.g. 0x01 gives h = 0xFFFFFFFF; then every chunk is cut by content
    # at its first tested position, exactly min bytes in.
    h = 0
    for _ in range(32):
        h = ((h << 1) ^ value) & 0xFFFFFFFF
    thr, m = 0xFFFFFFFF // avg, 0x7FFFFFFF
    steady_cut = kind == "xor32" and (m - thr < h < m + thr or h == 0xFFFFFFFF)
    expected = list(range(0, n, mn if steady_cut else mx)) if n > mn else [0]
    assert offsets == expected
    if kind == "xor32":
        assert offsets == reference_xor32(data, *params)


@SETTINGS
@given(contents(max_size=60_000), min_avg_max())
def test_chunked_xor32_file_has_two_chunks(data: bytes, params: tuple[int, int, int]) -> None:
    offsets = _native.xor32_offsets(data, *params).tolist()
    if len(data) <= params[0]:
        assert offsets == [0]
    # A chunked file never has exactly one cut-free chunk plus nothing: >= 2 chunks,
    # and one chunk means no cut position exists at all in [min, min(max, size)).
    if len(offsets) == 1 and len(data) > params[0]:
        assert len(data) <= params[2]
        assert reference_xor32(data, *params) == [0]


def test_simd_and_scalar_agree_on_large_random() -> None:
    data = np.random.Generator(np.random.PCG64(3)).bytes(6 << 20)
    for params in [(32, 64, 128), (1000, 4096, 20000), (64 << 10, 256 << 10, 1 << 20)]:
        a = _native.xor32_offsets(data, *params)
        b = _native.xor32_offsets(data, *params, simd=False)
        assert np.array_equal(a, b)
        assert len(a) > 5


@SETTINGS
@given(contents(max_size=30_000), st.integers(33, 5000))
def test_scan_candidates_are_the_window_function(data: bytes, avg: int) -> None:
    """Candidates depend only on the 32-byte window: compare with a direct evaluation."""
    pos, dist, size = _native.xor32_scan(data, avg)
    assert size == len(data)
    thr = _native.xor32_threshold(avg)
    arr = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    h = np.zeros(len(data), dtype=np.uint64)
    for k in range(min(32, len(data))):
        shifted = np.zeros(len(data), dtype=np.uint64)
        shifted[k:] = arr[: len(data) - k] << np.uint64(k)
        h ^= shifted
    h &= np.uint64(0xFFFFFFFF)
    m = np.int64(0x7FFFFFFF)
    d = np.abs(h.astype(np.int64) - m)
    d[h == 0xFFFFFFFF] = 0
    expected = np.nonzero(d < thr)[0]
    assert pos.tolist() == expected.tolist()
    assert dist.tolist() == d[expected].tolist()


@SETTINGS
@given(contents(max_size=50_000), st.integers(33, 3000), st.data())
def test_cuts_from_candidates_equal_chunker(data: bytes, avg: int, draw: st.DataObject) -> None:
    pos, _dist, size = _native.xor32_scan(data, avg)
    mn = draw.draw(st.integers(32, avg - 1))
    mx = draw.draw(st.integers(avg + 1, avg + 10_000))
    assert (
        _native.xor32_cuts(pos, size, mn, mx).tolist()
        == _native.xor32_offsets(data, mn, avg, mx).tolist()
    )


def test_nested_candidates_filter_by_distance() -> None:
    data = np.random.Generator(np.random.PCG64(9)).bytes(1 << 20)
    pos, dist, _ = _native.xor32_scan(data, 1000)
    for avg in (1000, 4000, 20000):
        p2, _, _ = _native.xor32_scan(data, avg)
        assert pos[dist < _native.xor32_threshold(avg)].tolist() == p2.tolist()


def test_fixed_default_is_graft_24mib() -> None:
    offs = _native.chunk_offsets(bytes(50 << 20), "fixed").tolist()
    assert offs == [0, 24 << 20, 48 << 20]


def test_fastcdc_random_sizes_cluster_near_avg() -> None:
    data = np.random.Generator(np.random.PCG64(4)).bytes(8 << 20)
    offs = _native.chunk_offsets(data, "fastcdc", 2048, 8192, 65536)
    sizes = np.diff([*offs.tolist(), len(data)])[:-1]
    # Normalized chunking: most chunks between avg/2 and 2*avg, few at max.
    assert 6000 < sizes.mean() < 14000
    assert np.mean((sizes > 4096) & (sizes < 16384)) > 0.7
    assert np.sum(sizes == 65536) == 0


def test_invalid_chunker_params(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="at least 64"):
        _native.chunk_offsets(b"", "fastcdc", 32, 64, 128)
    with pytest.raises(ValueError, match="unknown chunker 'rabin'"):
        _native.chunk_offsets(b"", "rabin")
    with pytest.raises(ValueError, match="at least 1 byte"):
        _native.chunk_offsets(b"", "fixed", fixed_size=0)
    with pytest.raises(UsageError, match="at least 64 bytes, got 32"):
        compute_layout(f, ChunkSpec(kind="fastcdc", min_size=32, avg_size=64, max_size=128))
    with pytest.raises(OSError):
        _native.chunk_offsets_file(str(tmp_path / "missing"), "xor32")


def test_compute_layout_layout_aware(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(bytes(10_000))
    spec = ChunkSpec(
        kind="layout-aware",
        min_size=1000,
        avg_size=2000,
        max_size=4000,
        preferred=(1500, 2100, 2500, 9000),
    )
    lay = compute_layout(f, spec)
    # 2100 is closest to 0 + 2000; then [3100, 6100) has no preference: hard cut at 6100;
    # then 9000 is in [7100, 10000) but 10000 - 6100 ... closest to 8100 is 9000.
    assert lay.offsets.tolist() == [0, 2100, 6100, 9000]
    assert lay.source == "layout-aware"


def test_real_cms_model_all_chunkers(cms_models: list[Path]) -> None:
    big = max(cms_models, key=lambda p: p.stat().st_size)
    data = big.read_bytes()
    for kind in ("xor32", "fastcdc"):
        spec = ChunkSpec(kind=kind, min_size=64 << 10, avg_size=128 << 10, max_size=512 << 10)
        lay = compute_layout(big, spec)
        assert lay.chunked and lay.file_size == len(data)
        assert (
            lay.offsets.tolist()
            == _native.chunk_offsets(data, kind, 64 << 10, 128 << 10, 512 << 10).tolist()
        )
