"""Network faults under the emulated client (issue item 6), on real FUSE mounts.

The builtin server injects each fault; the client must retry as configured (default 1),
then fail the read with EIO, count it in ``user.nioerr``, never return a byte it could
not verify, never hang beyond its timeout, and keep serving every other file.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.catalog import open_store_catalog
from cvmfs_modelio.sim.faults import FaultRule
from cvmfs_modelio.sim.mount import MountOptions, SimMount
from tests.sim.simfs_support import P2, counter_delta, publish_tree, served

MiB = 1 << 20
TIMEOUT_S = 1.0
KINDS = ("404", "500", "slow", "reset", "truncate", "corrupt")
HOSTILE = ("long", "short", "endless", "other", "silent")

pytestmark = pytest.mark.fuse


def _rand(seed: int, n: int) -> bytes:
    return np.random.Generator(np.random.PCG64(seed)).bytes(n)


FILES = {
    "whole.bin": _rand(21, 700 * 1024),  # below 1 MiB: one object, fetched at open()
    "chunked.bin": _rand(22, 9 * MiB),  # 1/2/4 MiB chunking: several chunks
    "healthy.bin": _rand(23, 300 * 1024),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("faults")
    return publish_tree(FILES, base / "src", base / "store", P2)


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[Any]:
    with served(store) as srv:
        yield srv


@pytest.fixture(scope="module")
def objects(store: Path) -> dict[str, list[tuple[str, int, int]]]:
    """repository path -> [(object hex, offset, size)] from the catalog."""
    out = {}
    with open_store_catalog(store) as cat:
        for name in FILES:
            e = cat.lookup("/" + name)
            assert e is not None
            chunks = cat.chunks("/" + name)
            if chunks:
                out[name] = [(c.hash, c.offset, c.size) for c in chunks]
            else:
                assert e.hash is not None
                out[name] = [(e.hash, 0, e.size)]
    assert len(out["chunked.bin"]) >= 3 and len(out["whole.bin"]) == 1
    return out


@pytest.fixture
def mount(tmp_path: Path, server: Any) -> Iterator[SimMount]:
    (tmp_path / "mnt").mkdir()
    opts = MountOptions(cache=tmp_path / "cache", timeout_direct_s=TIMEOUT_S)
    with SimMount(server.url, tmp_path / "mnt", opts) as m:
        yield m
    server.set_faults([])


def _rule(hexhash: str, kind: str, times: int | None = None) -> FaultRule:
    return FaultRule(match=f"{hexhash[2:]}P?$", kind=kind, times=times, delay_s=4 * TIMEOUT_S)


def _cached(cache: Path, hexhash: str) -> list[Path]:
    return list((cache / hexhash[:2]).glob(hexhash[2:] + "*"))


def _bound_s(retries: int) -> float:
    # Each attempt gives up after the timeout (libcurl checks the stall once a second).
    return (retries + 1) * (TIMEOUT_S + 1.5) + 2.0


@pytest.mark.parametrize("kind", KINDS + HOSTILE)
def test_unchunked_fault_is_eio_at_open_after_one_retry(
    kind: str, mount: SimMount, server: Any, objects: dict[str, Any]
) -> None:
    h = objects["whole.bin"][0][0]
    server.set_faults([_rule(h, kind)])
    before = mount.counters()
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        os.open(mount.path / "whole.bin", os.O_RDONLY)
    elapsed = time.monotonic() - t0
    assert e.value.errno == errno.EIO
    assert elapsed < _bound_s(1), elapsed
    d = counter_delta(before, mount.counters())
    assert d["download.n_requests"] == 2 and d["download.n_retries"] == 1
    assert d["cvmfs.n_io_error"] == 1
    assert os.getxattr(mount.path, "user.nioerr") == b"1"
    assert server.faults_fired() == [2]
    assert _cached(mount.cache, h) == []  # nothing unverified reached the cache
    # The mount keeps serving other files.
    assert (mount.path / "healthy.bin").read_bytes() == FILES["healthy.bin"]
    # And the file itself once the server behaves again.
    server.set_faults([])
    assert (mount.path / "whole.bin").read_bytes() == FILES["whole.bin"]
    assert os.getxattr(mount.path, "user.nioerr") == b"1"


@pytest.mark.parametrize("kind", KINDS + HOSTILE)
def test_chunk_fault_is_eio_on_read_and_no_unverified_byte(
    kind: str, mount: SimMount, server: Any, objects: dict[str, Any]
) -> None:
    chunks = objects["chunked.bin"]
    h1, off1, _ = chunks[1]
    server.set_faults([_rule(h1, kind)])
    data = FILES["chunked.bin"]
    fd = os.open(mount.path / "chunked.bin", os.O_RDONLY)  # opening fetches nothing
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        assert os.pread(fd, 4096, 0) == data[:4096]  # chunk 0 is fine
        before = mount.counters()
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            os.pread(fd, 8192, off1 + 100)
        assert e.value.errno == errno.EIO
        assert time.monotonic() - t0 < _bound_s(1)
        # A read that starts in good chunk 0 and runs into chunk 1 returns at most the
        # verified bytes before the failing page (POSIX short read), or EIO: never more.
        try:
            got = os.pread(fd, 8192, off1 - 4096)
        except OSError as err:
            assert err.errno == errno.EIO
            got = b""
        assert len(got) <= 4096 and got == data[off1 - 4096 : off1 - 4096 + len(got)]
        d = counter_delta(before, mount.counters())
        assert d["cvmfs.n_io_error"] >= 2
        # Every failed FUSE read made exactly one try and one retry.
        assert d["download.n_requests"] == 2 * d["cvmfs.n_io_error"]
        assert d["download.n_retries"] == d["cvmfs.n_io_error"]
        assert _cached(mount.cache, h1) == []
        # Other chunks and files still work.
        # (a whole page inside chunk 2: the kernel reads whole pages)
        off2 = (chunks[2][1] + 2 * 4096) & ~4095
        assert os.pread(fd, 4096, off2) == data[off2 : off2 + 4096]
        assert (mount.path / "healthy.bin").read_bytes() == FILES["healthy.bin"]
        server.set_faults([])
        assert os.pread(fd, 8192, off1 - 4096) == data[off1 - 4096 : off1 + 4096]
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ("500", "corrupt", "reset"))
def test_a_single_fault_is_absorbed_by_the_retry(
    kind: str, mount: SimMount, server: Any, objects: dict[str, Any]
) -> None:
    h = objects["whole.bin"][0][0]
    server.set_faults([_rule(h, kind, times=1)])
    before = mount.counters()
    assert (mount.path / "whole.bin").read_bytes() == FILES["whole.bin"]
    d = counter_delta(before, mount.counters())
    assert (d["download.n_requests"], d["download.n_retries"], d["cvmfs.n_io_error"]) == (2, 1, 0)
    assert server.faults_fired() == [1]
    assert len(_cached(mount.cache, h)) == 1


@pytest.mark.parametrize("retries", [0, 3])
def test_retries_as_configured(
    retries: int, tmp_path: Path, server: Any, objects: dict[str, Any]
) -> None:
    h = objects["whole.bin"][0][0]
    (tmp_path / "mnt").mkdir()
    opts = MountOptions(cache=tmp_path / "c", timeout_direct_s=TIMEOUT_S, retries=retries)
    server.set_faults([_rule(h, "500")])
    try:
        with SimMount(server.url, tmp_path / "mnt", opts) as m:
            before = m.counters()
            with pytest.raises(OSError) as e:
                (m.path / "whole.bin").read_bytes()
            assert e.value.errno == errno.EIO
            d = counter_delta(before, m.counters())
            assert d["download.n_requests"] == retries + 1
            assert server.faults_fired() == [retries + 1]
    finally:
        server.set_faults([])


def test_slow_server_within_the_timeout_is_not_a_fault(
    tmp_path: Path, server: Any, objects: dict[str, Any]
) -> None:
    h = objects["whole.bin"][0][0]
    (tmp_path / "mnt").mkdir()
    opts = MountOptions(cache=tmp_path / "c", timeout_direct_s=5.0)
    server.set_faults([FaultRule(match=f"{h[2:]}$", kind="slow", times=1, delay_s=0.5)])
    try:
        with SimMount(server.url, tmp_path / "mnt", opts) as m:
            assert (m.path / "whole.bin").read_bytes() == FILES["whole.bin"]
            c = m.counters()
            assert (c["cvmfs.n_io_error"], c["download.n_retries"]) == (0, 0)
    finally:
        server.set_faults([])


# ---------------------------------------------------------------- a hostile stratum at mount
# time and a catalog that changes under a live mount (issue 14, item 4)

REV1 = {"a.bin": _rand(31, 200 * 1024), "b.bin": _rand(32, 3 * MiB)}
REV2 = {"a.bin": _rand(41, 200 * 1024), "b.bin": _rand(42, 3 * MiB)}


@pytest.fixture(scope="module")
def two_revisions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with revision 1 (REV1) and then revision 2 (REV2, every file changed)."""
    base = tmp_path_factory.mktemp("revs")
    publish_tree(REV1, base / "src1", base / "store", P2)
    return publish_tree(REV2, base / "src2", base / "store", P2)


def _hexes(store: Path) -> dict[str, str]:
    """repository path -> catalog hash of the revision the manifest names, per object."""
    out = {}
    with open_store_catalog(store) as cat:
        for name in ("a.bin", "b.bin"):
            e = cat.lookup("/" + name)
            assert e is not None
            chunks = cat.chunks("/" + name)
            out[name] = chunks[0].hash if chunks else str(e.hash)
    return out


MOUNT_FAULTS = [
    (r"\.cvmfspublished$", "silent", "no answer within 1 s"),
    (r"\.cvmfspublished$", "long", "no answer within 1 s"),
    (r"\.cvmfspublished$", "endless", ".cvmfspublished: "),
    (r"\.cvmfspublished$", "short", "manifest"),
    (r"C$", "other", "catalog download failed: Input/output error"),
    (r"C$", "endless", "catalog download failed: Input/output error"),
    (r"C$", "short", "catalog download failed: Input/output error"),
    (r"C$", "silent", "catalog download failed: Input/output error"),
]


@pytest.mark.parametrize(("match", "kind", "why"), MOUNT_FAULTS)
def test_hostile_manifest_or_catalog_fails_the_mount_in_one_line_then_it_recovers(
    match: str, kind: str, why: str, tmp_path: Path, two_revisions: Path
) -> None:
    (tmp_path / "mnt").mkdir()
    opts = MountOptions(cache=tmp_path / "c", timeout_direct_s=TIMEOUT_S)
    with served(two_revisions) as srv:
        srv.set_faults([FaultRule(match=match, kind=kind)])
        t0 = time.monotonic()
        with pytest.raises(UsageError) as e, SimMount(srv.url, tmp_path / "mnt", opts):
            pass
        assert time.monotonic() - t0 < _bound_s(1) + 5.0  # + the client's start-up
        msg = str(e.value)
        assert "\n" not in msg and why in msg, msg
        assert srv.faults_fired()[0] >= 1
        assert not os.path.ismount(tmp_path / "mnt")
        assert list((tmp_path / "c").rglob("*C")) == []  # no unverified catalog cached
        srv.set_faults([])
        with SimMount(srv.url, tmp_path / "mnt", opts) as m:
            assert (m.path / "a.bin").read_bytes() == REV2["a.bin"]


def test_catalog_changes_under_a_live_mount(tmp_path: Path) -> None:
    """The stratum republishes while mounted: the mount keeps serving the revision it
    verified (exact bytes), fails with EIO once that revision's objects are gone (nothing
    of the new revision leaks in), serves them again when they come back, and a new mount
    serves the new revision."""
    store = publish_tree(REV1, tmp_path / "src1", tmp_path / "store", P2)
    old = _hexes(store)
    for name in ("m1", "m2"):
        (tmp_path / name).mkdir()
    opts = MountOptions(cache=tmp_path / "c1", timeout_direct_s=TIMEOUT_S)
    with served(store) as srv, SimMount(srv.url, tmp_path / "m1", opts) as m:
        publish_tree(REV2, tmp_path / "src2", store, P2)
        assert _hexes(store) != old
        assert (m.path / "a.bin").read_bytes() == REV1["a.bin"]
        assert os.getxattr(m.path, "user.revision") == b"1"
        # the stratum garbage-collects revision 1's first chunk of b.bin
        gone = store / "data" / old["b.bin"][:2] / (old["b.bin"][2:] + "P")
        kept = gone.with_name(gone.name + ".away")
        gone.rename(kept)
        fd = os.open(m.path / "b.bin", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                os.pread(fd, 4096, 0)
            assert e.value.errno == errno.EIO
            kept.rename(gone)  # the stratum recovers
            got = b""
            while chunk := os.pread(fd, MiB, len(got)):
                got += chunk
            assert got == REV1["b.bin"]
        finally:
            os.close(fd)
        opts2 = MountOptions(cache=tmp_path / "c2", timeout_direct_s=TIMEOUT_S)
        with SimMount(srv.url, tmp_path / "m2", opts2) as m2:
            assert os.getxattr(m2.path, "user.revision") == b"2"
            assert (m2.path / "a.bin").read_bytes() == REV2["a.bin"]
            assert (m2.path / "b.bin").read_bytes() == REV2["b.bin"]
