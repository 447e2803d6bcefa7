"""File bundles (CVMFS 2.14) on a real FUSE mount of the emulated client.

``sim publish`` links each ``.cvmfsbundle-<name>`` spec to its trigger (``bundle_trigger``
xattr); with ``--prefetch-filebundles`` opening the trigger prefetches every object of the
listed files (chunked ones chunk by chunk) on a pool of parallel fetchers without blocking
the open; without the option (the default) nothing more than the trigger is fetched.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvmfs_modelio.core.events import Op, Source, read_event_file
from cvmfs_modelio.sim.faults import FaultRule
from cvmfs_modelio.sim.mount import MountOptions, SimMount
from cvmfs_modelio.sim.store import FLAG_BUNDLE_TRIGGER, md5path, object_path, read_manifest
from tests.conftest import require_root_fuse
from tests.sim.simfs_support import P2, publish_tree, served

MiB = 1 << 20
SPEC = {
    "name": "CVMFS_BUNDLE",
    "version": "1.0.0",
    "encoding": "UTF-8",
    # absolute, relative to the spec's directory, and one not in the repository
    "dependencies": ["/m/model.onnx.data", "extra.bin", "/m/missing.bin"],
}


def _rand(seed: int, n: int) -> bytes:
    return np.random.Generator(np.random.PCG64(seed)).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("bundles")
    files = {
        "m/model.onnx": _rand(1, 3000),
        "m/model.onnx.data": _rand(2, 6 * MiB + 123),
        "m/extra.bin": _rand(3, 200_000),
        "m/.cvmfsbundle-model.onnx": json.dumps(SPEC).encode(),
        "other/plain.onnx": _rand(4, 5000),
        "other/.cvmfsbundle-nothing-here": b"{}",  # a spec without its trigger links nothing
    }
    return publish_tree(files, base / "src", base / "store", P2)


def _catalog(store: Path) -> sqlite3.Connection:
    m = read_manifest(store)
    assert m is not None
    db = store.parent / "catalog.sqlite"
    db.write_bytes(zlib.decompress(object_path(store, m.catalog_hash, "C").read_bytes()))
    return sqlite3.connect(db)


def _objects(store: Path, path: str) -> list[str]:
    """Object paths (``data/XX/...``, as the client log names them) of a file, in offset order."""
    con = _catalog(store)
    k1, k2 = md5path(path)
    rows = con.execute(
        "SELECT hash FROM chunks WHERE md5path_1=? AND md5path_2=? ORDER BY offset", (k1, k2)
    ).fetchall()
    if rows:
        return [f"data/{h.hex()[:2]}/{h.hex()[2:]}P" for (h,) in rows]
    (h,) = con.execute(
        "SELECT hash FROM catalog WHERE md5path_1=? AND md5path_2=?", (k1, k2)
    ).fetchone()
    return [f"data/{h.hex()[:2]}/{h.hex()[2:]}"]


def test_publish_links_each_spec_to_its_trigger(store: Path) -> None:
    con = _catalog(store)
    flagged = sorted(
        name
        for name, flags in con.execute("SELECT name, flags FROM catalog")
        if flags & FLAG_BUNDLE_TRIGGER
    )
    assert flagged == ["model.onnx"]


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[Any]:
    require_root_fuse()
    with served(store) as srv:
        yield srv


@contextmanager
def mounted(tmp: Path, url: str, prefetch: bool) -> Iterator[SimMount]:
    (tmp / "mnt").mkdir()
    opts = MountOptions(cache=tmp / "cache", log=tmp / "log.evt", prefetch_filebundles=prefetch)
    with SimMount(url, tmp / "mnt", opts) as m:
        yield m


def wait_downloads(m: SimMount, before: int, want: int) -> None:
    """Block until the client has made ``want`` more downloads (the prefetch runs in the
    background); fails with the counters if it never gets there."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        c = m.counters()
        if c["fetch.n_downloads"] - before >= want:
            return
        time.sleep(0.05)
    pytest.fail(f"prefetch did not finish: {m.counters()}")


def fetched(log: Path) -> list[tuple[str, int, int, int]]:
    """(object path, chunk offset, start ns, end ns) of every fetch, in start order."""
    ev_log = read_event_file(log)
    ev = ev_log.events
    sel = ev[(ev["source"] == Source.FETCH) & (ev["op"] == Op.FETCH)]
    sel = sel[sel["t_start_ns"].argsort(kind="stable")]
    return [
        (
            ev_log.files[int(e["file_id"])].path,
            int(e["offset"]),
            int(e["t_start_ns"]),
            int(e["t_start_ns"] + e["duration_ns"]),
        )
        for e in sel
    ]


def opens(log: Path) -> list[tuple[str, int, int]]:
    ev_log = read_event_file(log)
    ev = ev_log.events
    sel = ev[(ev["source"] == Source.FUSE) & (ev["op"] == Op.FUSE_OPEN)]
    return [
        (
            ev_log.files[int(e["file_id"])].path,
            int(e["t_start_ns"]),
            int(e["t_start_ns"] + e["duration_ns"]),
        )
        for e in sel
    ]


def test_trigger_xattr(server: Any, tmp_path: Path) -> None:
    with mounted(tmp_path, server.url, prefetch=False) as m:
        assert os.getxattr(m.path / "m" / "model.onnx", "user.bundle_trigger") == b"1"
        for f in ("m/model.onnx.data", "m/extra.bin", "other/plain.onnx"):
            assert os.getxattr(m.path / f, "user.bundle_trigger") == b"0", f


def test_opening_the_trigger_prefetches_every_object_of_the_bundle(
    store: Path, server: Any, tmp_path: Path
) -> None:
    trigger = _objects(store, "/m/model.onnx")
    spec = _objects(store, "/m/.cvmfsbundle-model.onnx")
    chunks = _objects(store, "/m/model.onnx.data")
    extra = _objects(store, "/m/extra.bin")
    assert len(chunks) >= 2  # the data file is chunked: fetched chunk by chunk
    with mounted(tmp_path, server.url, prefetch=True) as m:
        before = m.counters()["fetch.n_downloads"]
        fd = os.open(m.path / "m" / "model.onnx", os.O_RDONLY)  # open only: no read
        os.close(fd)
        wait_downloads(m, before, len(trigger + spec + chunks + extra))
        c = m.counters()
        # two dependencies fetched, the third is not in the repository (skipped, no error)
        assert (c["cmio.n_bundle_triggers"], c["cmio.n_bundle_deps"]) == (1, 2)
        assert (c["cmio.n_bundle_missing"], c["cvmfs.n_io_error"]) == (1, 0)
        # everything the bundle named is now served from the cache: no more downloads
        assert (m.path / "m" / "model.onnx.data").read_bytes()[:10]
        (m.path / "m" / "extra.bin").read_bytes()
        assert m.counters()["fetch.n_downloads"] == c["fetch.n_downloads"]
    got = fetched(tmp_path / "log.evt")
    names = [g[0] for g in got]
    assert sorted(names[1:]) == sorted(trigger + spec + chunks + extra)  # [0]: the catalog
    # the chunked dependency chunk by chunk, in offset order, each at its own offset
    chunk_fetches = [g for g in got if g[0] in chunks]
    assert [g[0] for g in chunk_fetches] == chunks
    offs = [g[1] for g in chunk_fetches]
    assert offs[0] == 0 and offs == sorted(offs) and len(set(offs)) == len(chunks)


def test_prefetch_does_not_block_open_and_runs_in_parallel(store: Path, tmp_path: Path) -> None:
    require_root_fuse()
    chunks = _objects(store, "/m/model.onnx.data")
    extra = _objects(store, "/m/extra.bin")
    slow = [FaultRule(match=r"(P|" + extra[0].rsplit("/", 1)[1] + r")$", kind="slow", delay_s=1.0)]
    with served(store, faults=slow) as srv, mounted(tmp_path, srv.url, prefetch=True) as m:
        before = m.counters()["fetch.n_downloads"]
        os.close(os.open(m.path / "m" / "model.onnx", os.O_RDONLY))
        wait_downloads(m, before, 2 + len(chunks) + 1)
    got = fetched(tmp_path / "log.evt")
    (op,) = [o for o in opens(tmp_path / "log.evt") if o[0] == "/m/model.onnx"]
    deps = [g for g in got if g[0] in chunks + extra]
    # open() returned before any dependency had arrived (each takes >= 1 s to answer)
    assert op[2] < min(g[3] for g in deps)
    # the extra file was fetched while the chunks were: separate fetchers, in parallel
    (e,) = [g for g in deps if g[0] == extra[0]]
    assert any(g[2] < e[3] and e[2] < g[3] for g in deps if g[0] in chunks)


def test_off_by_default_opening_the_trigger_fetches_only_the_trigger(
    store: Path, server: Any, tmp_path: Path
) -> None:
    assert MountOptions().prefetch_filebundles is False
    with mounted(tmp_path, server.url, prefetch=False) as m:
        os.close(os.open(m.path / "m" / "model.onnx", os.O_RDONLY))
        time.sleep(0.5)  # room for a (wrong) background prefetch to show up in the log
        c = m.counters()
        assert c["cmio.n_bundle_triggers"] == 0
    names = [g[0] for g in fetched(tmp_path / "log.evt")]
    assert names[1:] == _objects(store, "/m/model.onnx")
