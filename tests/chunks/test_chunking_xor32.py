"""The xor32 chunker is bit-exact with the real CVMFS 2.12 publisher."""

from __future__ import annotations

import hashlib
import itertools
import zlib
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio import _native
from tests.conftest import chunk_vectors, load_vector, vector_content


def test_vectors_present() -> None:
    # The vectors live in ../shared; their absence must fail, not silently skip.
    assert len(chunk_vectors()) == 15


@pytest.mark.parametrize("vec_path", chunk_vectors(), ids=lambda p: p.stem)
def test_real_publisher_vector(vec_path: Path, tmp_path: Path) -> None:
    vec = load_vector(vec_path)
    data = vector_content(vec)
    if data is None:
        pytest.fail(f"{vec_path.name}: content not reproducible here: {vec['content']}")
    assert len(data) == vec["size"]
    assert hashlib.sha256(data).hexdigest() == vec["sha256"]
    p = vec["params"]
    args = (p["CVMFS_MIN_CHUNK_SIZE"], p["CVMFS_AVG_CHUNK_SIZE"], p["CVMFS_MAX_CHUNK_SIZE"])
    offsets = _native.xor32_offsets(data, *args).tolist()
    expected = [c["offset"] for c in vec["chunks"]]
    assert offsets == expected
    assert (len(offsets) > 1) == vec["chunked"]
    bounds = [*offsets, len(data)]
    sizes = [bounds[i + 1] - bounds[i] for i in range(len(offsets))]
    assert sizes == [c["size"] for c in vec["chunks"]]
    names = [
        hashlib.sha1(zlib.compress(data[a:b], 6)).hexdigest() for a, b in itertools.pairwise(bounds)
    ]
    assert names == [c["object_sha1"] for c in vec["chunks"]]
    # The file path variant gives the same cuts.
    f = tmp_path / "f"
    f.write_bytes(data)
    file_offsets, size = _native.xor32_offsets_file(str(f), *args)
    assert file_offsets.tolist() == expected
    assert size == len(data)


def test_min_32_is_accepted_and_tiles() -> None:
    data = np.random.Generator(np.random.PCG64(1)).bytes(100_000)
    offs = _native.xor32_offsets(data, 32, 64, 128).tolist()
    sizes = np.diff([*offs, len(data)])
    assert offs[0] == 0
    assert all(32 <= s <= 128 for s in sizes[:-1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((31, 64, 128), "at least 32"),
        ((64, 64, 128), "min < avg < max"),
        ((32, 200, 128), "min < avg"),
    ],
)
def test_invalid_params(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _native.xor32_offsets(b"x" * 10, *args)
