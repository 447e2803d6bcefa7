"""The client profiles on real mounts: cvmfs-2.12 does per object what cvmfs2 does, fast does not.

Checked from the outside: the system calls the client makes (strace), the SQLite LRU database
it keeps (`<cache>/cachedb`, cvmfs2's schema), what it reports (xattr, counters, event log);
and that both profiles fetch the same objects in the same order.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvmfs_modelio.core.events import read_event_file
from cvmfs_modelio.sim.catalog import open_store_catalog
from cvmfs_modelio.sim.mount import MountOptions, SimMount, _spawn_ready, mount_type
from tests.sim.simfs_support import P2, fetches, publish_tree, served

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"
)

MiB = 1 << 20
FILES = {
    "c/chunked.bin": np.random.Generator(np.random.PCG64(11)).bytes(9 * MiB + 777),
    "w/whole.bin": np.random.Generator(np.random.PCG64(12)).bytes(300_000),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("profiles")
    return publish_tree(FILES, base / "src", base / "store", P2)


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[Any]:
    with served(store) as srv:
        yield srv


def _objects(store: Path) -> list[tuple[str, str, int, str]]:
    """(cache key = hex + suffix, object path, decompressed size, description) in file order."""
    out = []
    with open_store_catalog(store) as cat:
        for rel in sorted(FILES):
            path = "/" + rel
            chunks = cat.chunks(path)
            if chunks:
                out += [
                    (c.hash + "P", f"data/{c.hash[:2]}/{c.hash[2:]}P", c.size, f"Part of {path}")
                    for c in chunks
                ]
            else:
                e = cat.lookup(path)
                assert e is not None and e.hash is not None
                out.append((e.hash, f"data/{e.hash[:2]}/{e.hash[2:]}", e.size, path))
    return out


def _read_all(root: Path) -> None:
    for rel, data in sorted(FILES.items()):
        assert (root / rel).read_bytes() == data


def test_both_profiles_fetch_the_same_objects_in_the_same_order(
    tmp_path: Path, server: Any, store: Path
) -> None:
    got = {}
    for profile in ("cvmfs-2.12", "fast"):
        mp = tmp_path / f"m-{profile}"
        mp.mkdir()
        log = tmp_path / f"{profile}.evt"
        opts = MountOptions(cache=tmp_path / f"c-{profile}", log=log, client_profile=profile)
        with SimMount(server.url, mp, opts) as m:
            assert m.client_profile == profile
            assert os.getxattr(mp, "user.cmio_client_profile") == profile.encode()
            _read_all(mp)
            c = m.counters()
        meta = read_event_file(log).meta
        assert meta["client_profile"] == profile
        assert meta["cost_per_object_ns"] == c["cmio.cost_per_object_ns"]
        got[profile] = [(p, r) for p, _w, r in fetches(log)]
    assert got["cvmfs-2.12"] == got["fast"]
    want = [(o, size) for _k, o, size, _d in _objects(store)]
    assert [g for g in got["fast"] if not g[0].endswith("C")] == want


def test_cvmfs_212_keeps_the_lru_database_of_cvmfs2(
    tmp_path: Path, server: Any, store: Path
) -> None:
    cache, mp = tmp_path / "cache", tmp_path / "mnt"
    mp.mkdir()
    opts = MountOptions(cache=cache, client_profile="cvmfs-2.12")
    with SimMount(server.url, mp, opts) as m:
        # The whole skeleton up front, as cvmfs2's MakeCacheDirectories.
        assert all((cache / f"{i:02x}").is_dir() for i in range(256))
        assert (cache / "quarantaine").is_dir() and (cache / "txn").is_dir()
        _read_all(mp)
        c0 = m.counters()
    # Fewer than 32 commands: written as one bunch when the client stops.
    db = sqlite3.connect(cache / "cachedb")
    try:
        cols = [r[1] for r in db.execute("PRAGMA table_info(cache_catalog)")]
        assert cols == ["sha1", "size", "acseq", "path", "type", "pinned"]
        rows = db.execute(
            "SELECT sha1, size, path, type, pinned FROM cache_catalog ORDER BY acseq"
        ).fetchall()
        schema = db.execute("SELECT value FROM properties WHERE key='schema'").fetchone()
    finally:
        db.close()
    assert schema == ("1.0",)
    catalog, data = rows[0], rows[1:]
    assert catalog[0].endswith("C") and catalog[2:] == ("file catalog", 1, 1)  # pinned
    assert [(k, s, d, 0, 0) for k, _o, s, d in _objects(store)] == data
    for key, size, *_ in rows:
        assert (cache / key[:2] / key[2:]).stat().st_size == size
    assert c0["cmio.n_quota_transactions"] == 0  # nothing committed while mounted
    assert not any((cache / "txn").iterdir())
    # Remounted on the same cache: a cleanup empties it through the database, the pinned
    # catalog stays.
    with SimMount(server.url, mp, opts) as m:
        before = m.counters()
        m.cleanup()
        after = m.counters()
        assert after["cmio.n_quota_transactions"] > before["cmio.n_quota_transactions"]
        left = sorted(p.name for p in cache.glob("??/*"))
        assert left == [catalog[0][2:]]
        _read_all(mp)
        assert m.counters()["fetch.n_downloads"] - after["fetch.n_downloads"] == len(data)


def test_fast_profile_keeps_no_database(tmp_path: Path, server: Any) -> None:
    (tmp_path / "mnt").mkdir()
    opts = MountOptions(cache=tmp_path / "cache", client_profile="fast")
    with SimMount(server.url, tmp_path / "mnt", opts) as m:
        _read_all(m.path)
        assert m.counters()["cmio.cost_per_object_ns"] == 0
    assert not (tmp_path / "cache" / "cachedb").exists()


def _traced(tmp_path: Path, server: Any, profile: str) -> list[str]:
    """The client's openat/write/rename/stat calls (strace) while both files are read."""
    mp, out = tmp_path / f"m-{profile}", tmp_path / f"{profile}.strace"
    mp.mkdir()
    mount = SimMount(
        server.url, mp, MountOptions(cache=tmp_path / f"c-{profile}", client_profile=profile)
    )
    argv = [
        "strace",
        "-f",
        "-qq",
        "-o",
        str(out),
        "-e",
        "trace=openat,write,rename,newfstatat,stat",
        "-e",
        "signal=none",
    ]
    proc = _spawn_ready([*argv, *mount.argv(server.url)], detach=False, where=str(mp), timeout_s=60)
    try:
        _read_all(mp)
    finally:
        pid = int(os.getxattr(mp, "user.pid"))
        os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while mount_type(mp) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    return out.read_text().splitlines()


def test_cvmfs_212_makes_the_system_calls_of_cvmfs2(
    tmp_path: Path, server: Any, store: Path
) -> None:
    if subprocess.run(["which", "strace"], capture_output=True, check=False).returncode != 0:
        pytest.skip("strace is not installed (Debian package strace)")
    objs = _objects(store)
    key, _o, size, _d = objs[0]  # the first chunk of c/chunked.bin
    final = f"c-cvmfs-2.12/{key[:2]}/{key[2:]}"
    lines = _traced(tmp_path, server, "cvmfs-2.12")
    text = "\n".join(lines)
    # Two cache probes by open(2) (before and after taking the download queue), ENOENT.
    probes = [ln for ln in lines if f'{final}", O_RDONLY' in ln and "ENOENT" in ln]
    assert len(probes) == 2, probes
    # The transaction file: mkstemp in txn/, written in 4 KiB blocks, opened again
    # read-only before the rename into place.
    opened = re.finditer(
        r'openat\(AT_FDCWD, "([^"]*/txn/fetch\w{6})", '
        r"O_RDWR\|O_CREAT\|O_EXCL\|O_CLOEXEC, 0600\) = (\d+)",
        text,
    )
    m = next(x for x in opened if f'rename("{x.group(1)}", "{tmp_path}/{final}")' in text)
    tmp, fd = m.group(1), m.group(2)
    after = text[m.end() :]
    rename_at = after.index(f'rename("{tmp}", ')
    writes = [int(w) for w in re.findall(rf"write\({fd}, .*?, (\d+)\) = \d+", after[:rename_at])]
    assert sum(writes) == size and set(writes[:-1]) == {4096} and 0 < writes[-1] <= 4096
    assert f'openat(AT_FDCWD, "{tmp}", O_RDONLY|O_CLOEXEC)' in after[:rename_at]
    # The fast profile: no open() probes, large writes.
    fast = _traced(tmp_path, server, "fast")
    fast_final = f"c-fast/{key[:2]}/{key[2:]}"
    assert not [ln for ln in fast if f'{fast_final}", O_RDONLY' in ln and "ENOENT" in ln]
    big = [int(w) for w in re.findall(r"write\(\d+, .*?, (\d+)\) = \d+", "\n".join(fast))]
    assert max(big) > 4096
