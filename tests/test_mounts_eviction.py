"""``mounts.drop_page_cache``: the eviction every campaign run goes through."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from cvmfs_modelio import _native
from cvmfs_modelio.core.errors import MeasurementError
from cvmfs_modelio.mounts import drop_page_cache

PAGE = os.sysconf("SC_PAGESIZE")


def test_drop_page_cache_flushes_a_file_just_written(tmp_path: Path) -> None:
    f = tmp_path / "fresh.bin"
    f.write_bytes(os.urandom(64 * PAGE))  # dirty: DONTNEED alone would keep the pages
    assert drop_page_cache([f]) == 1
    assert not _native.probe_resident_pages(str(f)).any()


def test_drop_page_cache_refuses_when_pages_stay(tmp_path: Path) -> None:
    f = tmp_path / "held.bin"
    f.write_bytes(os.urandom(16 * PAGE))
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        _ = sum(m[o] for o in range(0, 16 * PAGE, PAGE))
        with pytest.raises(MeasurementError) as e:
            drop_page_cache([f])
    assert str(e.value) == (
        f"{f}: cold run refused: 16 of 16 pages still in the page cache after fdatasync "
        "and eviction; is another process mapping it?"
    )
