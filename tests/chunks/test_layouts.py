"""Layouts: CVMFS xattr parsing on real captured outputs, hostile input, and layout_for."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmfs_modelio.chunks.layouts import (
    ChunkSpec,
    Layout,
    NotOnCvmfsError,
    compute_layout,
    layout_for,
    layout_from_xattrs,
    parse_chunk_list,
    parse_chunk_list_page,
    parse_chunk_spec,
    parse_num_pages,
    read_cvmfs_layout,
)
from cvmfs_modelio.core.errors import UsageError
from tests.conftest import CHUNK_VECTORS, load_vector

RAW = CHUNK_VECTORS / "raw_xattrs"


def raw_attrs(prefix: str) -> dict[str, bytes]:
    """Captured attribute values of one file, keyed by attribute name."""
    out: dict[str, bytes] = {}
    for f in sorted(RAW.glob(f"{prefix}__*.txt")):
        name = f.stem.split("__", 1)[1]
        for suffix, real in (("_tilde_q", "~?"), ("_at_q", "@?")):
            name = name.replace(suffix, real)
        for form, sep in (("_tilde_", "~"), ("_at_", "@")):
            if form in name:
                base, _, n = name.partition(form)
                name = f"{base}{sep}{n}"
        out[name] = f.read_bytes()
    return out


def vector(prefix: str) -> dict[str, object]:
    (path,) = [
        p
        for p in CHUNK_VECTORS.glob("*.json")
        if p.stem.startswith(prefix.split("_")[0])
        and p.stem.endswith(prefix.split("_", 1)[1] + "_bin")
    ]
    return load_vector(path)


def test_raw_names_are_mapped() -> None:
    assert sorted(raw_attrs("P5_r32_s77")) == [
        "user.chunk_list",
        "user.chunk_list@1",
        "user.chunk_list@?",
        "user.chunk_list~0",
        "user.chunk_list~1",
        "user.chunk_list~?",
        "user.chunks",
        "user.compression",
    ]


def test_paged_real_chunk_list() -> None:
    attrs = raw_attrs("P5_r32_s77")
    vec = vector("P5_r32_s77")
    layout = layout_from_xattrs(attrs, "/cvmfs/x/r32_s77.bin")
    chunks = vec["chunks"]
    assert isinstance(chunks, list)
    assert layout.source == "cvmfs-xattr"
    assert layout.n_chunks == 1059 == vec["user.chunks"]
    assert layout.chunked
    assert layout.file_size == vec["size"] == 33554432
    assert layout.offsets.tolist() == [c["offset"] for c in chunks]
    assert layout.sizes.tolist() == [c["size"] for c in chunks]
    assert layout.hashes == tuple(c["object_sha1"] for c in chunks)
    assert layout.compression == "zlib"
    # Page 0 and page 1 split where the real client split them (page 0 > 40000 chars).
    p0 = parse_chunk_list_page(attrs["user.chunk_list~0"])
    p1 = parse_chunk_list_page(attrs["user.chunk_list~1"])
    assert len(p0) == 721 and len(p1) == 338
    assert p1[0] == ("d340227207c96a5e90713b265cc150bf57766579", 22866187, 23406)
    assert len(attrs["user.chunk_list~0"]) == 40034


def test_plain_chunk_list_is_page_zero() -> None:
    attrs = raw_attrs("P5_r32_s77")
    assert attrs["user.chunk_list"] == attrs["user.chunk_list~0"]
    # Only page 0: a valid prefix, but not the whole file.
    offsets, sizes, _ = parse_chunk_list([attrs["user.chunk_list"]])
    assert len(offsets) == 721 and int(offsets[-1] + sizes[-1]) == 22866187
    # Cross-check against user.chunks catches the truncation.
    with pytest.raises(
        UsageError, match=r"user\.chunks says 1059 chunks, user\.chunk_list lists 721"
    ):
        layout_from_xattrs(
            {"user.chunk_list": attrs["user.chunk_list"], "user.chunks": b"1059"}, "/f"
        )


def test_human_readable_forms() -> None:
    attrs = raw_attrs("P5_r32_s77")
    assert parse_num_pages(attrs["user.chunk_list~?"]) == 2
    assert parse_num_pages(attrs["user.chunk_list@?"]) == 2
    assert parse_chunk_list_page(attrs["user.chunk_list@1"]) == parse_chunk_list_page(
        attrs["user.chunk_list~1"]
    )
    # A human-readable set with page 0 missing is reported, not guessed.
    with pytest.raises(UsageError, match=r"^/f: user.chunk_list@0 missing \(user.chunk_list@\? "):
        layout_from_xattrs({k: v for k, v in attrs.items() if "@" in k}, "/f")


def test_unchunked_real_file() -> None:
    attrs = raw_attrs("P1_r3_s7")
    layout = layout_from_xattrs(attrs, "/cvmfs/x/r3_s7.bin")
    assert not layout.chunked
    assert layout.n_chunks == 1
    assert layout.offsets.tolist() == [0] and layout.sizes.tolist() == [3145728]
    assert layout.hashes == ("b85376aa09a6ee83b2105fb28273c697ad36127b",)
    assert layout.compression == "zlib"
    bad = dict(attrs, **{"user.hash": b"0" * 40})
    with pytest.raises(UsageError, match=r"user\.hash '0{40}'"):
        layout_from_xattrs(bad, "/f")


def test_not_on_cvmfs(tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"x" * 1000)
    with pytest.raises(NotOnCvmfsError) as e:
        read_cvmfs_layout(f)
    assert str(e.value) == f"{f}: not on CVMFS (no user.chunk_list attribute)"
    lay = layout_for(f)
    assert lay.source == "xor32" and lay.n_chunks == 1 and lay.file_size == 1000
    assert lay.params == {"min": 4 << 20, "avg": 8 << 20, "max": 16 << 20}
    with pytest.raises(NotOnCvmfsError):
        layout_for(f, source="cvmfs")
    with pytest.raises(UsageError, match="no such file"):
        read_cvmfs_layout(tmp_path / "missing")


def test_user_xattrs_on_tmpfs_are_read(tmp_path: Path) -> None:
    """A file system that answers user.* (tmpfs/ext4) with CVMFS-shaped values is parsed."""
    f = tmp_path / "f.bin"
    f.write_bytes(bytes(3145728))
    attrs = raw_attrs("P1_r3_s7")
    try:
        for k, v in attrs.items():
            os.setxattr(f, k, v)
    except OSError as e:
        pytest.skip(f"user xattrs not supported here: {e}")
    lay = layout_for(f)
    assert lay.source == "cvmfs-xattr"
    assert lay.hashes == ("b85376aa09a6ee83b2105fb28273c697ad36127b",)
    assert layout_for(f, source="compute").source == "xor32"
    f.write_bytes(bytes(100))  # size disagrees with the list now
    for k, v in attrs.items():
        os.setxattr(f, k, v)
    with pytest.raises(UsageError, match="covers 3145728 bytes, the file has 100"):
        read_cvmfs_layout(f)


@pytest.mark.parametrize(
    ("pages", "message"),
    [
        ([""], "expected header line"),
        (["hash,offset,size\n"], "page has no chunks"),
        (["hash,offset,size\nzz,0,1\n"], "line 2: expected"),
        (["hash,offset,size\n" + "a" * 40 + ",0,-1\n"], "line 2"),
        (["hash,offset,size\n" + "a" * 40 + ",0,01\n"], "line 2"),
        (["hash,offset,size\n" + "a" * 40 + ",5,10\n"], "chunk 0 starts at 5, expected 0"),
        (
            ["hash,offset,size\n" + "a" * 40 + ",0,10\n" + "b" * 40 + ",11,10\n"],
            "chunk 1 starts at 11, expected 10",
        ),
        (["hash,offset,size\n" + "a" * 40 + ",0,10\n" + "b" * 40 + ",10,0\n"], "chunk 1 is empty"),
        (
            [
                "hash,offset,size\n"
                + "a" * 40
                + ",0,9223372036854775807\n"
                + "b" * 40
                + ",9223372036854775807,1\n"
            ],
            r"beyond 2\^63",
        ),
    ],
)
def test_bad_chunk_lists(pages: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_chunk_list(pages)


def test_hash_suffixes_accepted() -> None:
    rows = parse_chunk_list_page("hash,offset,size\n" + "a" * 40 + "-rmd160,0,7\n")
    assert rows == [("a" * 40 + "-rmd160", 0, 7)]


def test_bad_num_pages() -> None:
    for text in ("", "num_pages, ", "num_pages, 0", "num_pages,2", "pages: 2", "num_pages, -1"):
        with pytest.raises(UsageError):
            parse_num_pages(text)
    with pytest.raises(UsageError, match="not ASCII"):
        parse_num_pages(b"\xff")


def test_compute_layout_kinds(tmp_path: Path) -> None:
    f = tmp_path / "r"
    f.write_bytes(np.random.Generator(np.random.PCG64(5)).bytes(300_000))
    fixed = compute_layout(f, ChunkSpec(kind="fixed", size=100_000))
    assert fixed.offsets.tolist() == [0, 100_000, 200_000] and fixed.source == "fixed"
    one = compute_layout(f, ChunkSpec(kind="fixed", size=300_000))
    assert one.offsets.tolist() == [0]
    assert compute_layout(f, ChunkSpec(kind="whole")).sizes.tolist() == [300_000]
    x = compute_layout(f, ChunkSpec(min_size=10_000, avg_size=20_000, max_size=40_000))
    assert x.source == "xor32" and x.chunked
    assert np.all(x.sizes[:-1] >= 10_000) and np.all(x.sizes <= 40_000)
    with pytest.raises(UsageError, match="min < avg < max"):
        compute_layout(f, ChunkSpec(min_size=100, avg_size=100, max_size=200))


def test_layout_validation() -> None:
    with pytest.raises(ValueError, match="tile"):
        Layout(np.array([0, 5]), np.array([4, 5]), 10, None, "xor32")
    with pytest.raises(ValueError, match="unknown layout source"):
        Layout.from_offsets([0], 10, "magic")
    a = Layout.from_offsets([0, 4], 10, "fixed", {"size": 4})
    assert a == Layout.from_offsets([0, 4], 10, "fixed", {"size": 4})
    assert a.chunk_of([0, 3, 4, 9]).tolist() == [0, 0, 1, 1]
    assert a.ends.tolist() == [4, 10]


# ------------------------------------------------------------------ hostile input

_real = raw_attrs("P5_r32_s77")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_fuzz_page_parser(value: str | bytes) -> None:
    try:
        rows = parse_chunk_list_page(value)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert all(len(h) >= 40 and o >= 0 and s >= 0 for h, o, s in rows)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=100), st.binary(max_size=100)))
def test_fuzz_num_pages(value: str | bytes) -> None:
    try:
        n = parse_num_pages(value)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert n >= 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(_real)),
    st.integers(min_value=0, max_value=40_000),
    st.integers(min_value=0, max_value=64),
    st.binary(max_size=8),
)
def test_fuzz_mutated_real_attrs(key: str, at: int, cut: int, insert: bytes) -> None:
    """Splice bytes into a real capture: a valid layout or a one-line UsageError."""
    attrs = dict(_real)
    v = attrs[key]
    at = min(at, len(v))
    attrs[key] = v[:at] + insert + v[at + cut :]
    try:
        lay = layout_from_xattrs(attrs, "/f")
    except UsageError as e:
        assert "\n" not in str(e)
        assert str(e).startswith("/f: ")
    else:
        assert lay.file_size == int(lay.sizes.sum())


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.from_regex(
            r"(xor32:|fastcdc:|fixed:|tensor-aware:)?[0-9.]{1,30}[KMGTP]?(iB)?"
            r"([/,][0-9.]{1,30}[KMGTP]?(iB)?){0,3}",
            fullmatch=True,
        ),
    )
)
def test_fuzz_chunk_spec(text: str) -> None:
    """Command-line chunk configs: a valid spec or a one-line UsageError, nothing else."""
    try:
        spec = parse_chunk_spec(text)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        spec.validate()
        if spec.kind in ("xor32", "fastcdc"):
            assert 32 <= spec.min_size < spec.avg_size < spec.max_size


def test_huge_sizes_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="too large"):
        parse_chunk_spec("fixed:" + "9" * 400)
    with pytest.raises(UsageError, match="too large"):
        parse_chunk_spec("1M/2M/" + "9" * 30 + "P")
    with pytest.raises(UsageError, match="at most 2\\^62"):
        parse_chunk_spec("fixed:4096PiB")
