"""The emulated CVMFS client on real FUSE mounts: read-back, xattrs, fetch fidelity, cache.

Every test mounts ``cmio-simfs`` for real (root, /dev/fuse) in front of ``sim serve``'s
servers, and checks what the real cvmfs2 client does (../shared/cvmfs-facts.md §2-3,
testvectors/cvmfs-fetch and cvmfs-chunks/raw_xattrs).
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvmfs_modelio.sim.catalog import open_store_catalog
from cvmfs_modelio.sim.mount import (
    FSTYPE,
    MountOptions,
    SimMount,
    is_stale,
    mount_type,
    parse_counters,
    umount,
)
from cvmfs_modelio.sim.publish import PublishParams
from tests.conftest import CHUNK_VECTORS, CLIENT_VECTORS, CMS_MODELS, FETCH_VECTORS
from tests.sim.simfs_support import (
    P1,
    P2,
    P5,
    counter_delta,
    fetches,
    merge_stores,
    publish_tree,
    served,
    vector_file,
)

MiB = 1 << 20
KiB = 1 << 10

pytestmark = pytest.mark.fuse


def _rand(seed: int, n: int) -> bytes:
    return np.random.Generator(np.random.PCG64(seed)).bytes(n)


# ---------------------------------------------------------------- fixtures

SYNTHETIC = {
    "synthetic/empty.bin": b"",
    "synthetic/tiny.txt": b"hello cvmfs\n",
    "synthetic/below_min.bin": _rand(1, 3 * MiB),
    "synthetic/at_min.bin": _rand(2, 4 * MiB),
    "synthetic/above_min.bin": _rand(3, 4 * MiB + 1),
    "synthetic/chunked_22m.bin": _rand(4, 22 * MiB + 12345),
    "synthetic/zeros_40m.bin": bytes(40 * MiB),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source tree, store): the CMS models and synthetic files around the 4 MiB threshold."""
    base = tmp_path_factory.mktemp("simfs_tree")
    files = dict(SYNTHETIC)
    for p in sorted(CMS_MODELS.rglob("*")):
        if p.is_file():
            files["cms/" + p.relative_to(CMS_MODELS).as_posix()] = p.read_bytes()
    src, store = base / "src", base / "store"
    (src / "synthetic").mkdir(parents=True)
    os.symlink("tiny.txt", src / "synthetic" / "link_to_tiny")
    publish_tree(files, src, store, PublishParams())
    return src, store


@pytest.fixture(scope="module")
def server(tree: tuple[Path, Path]) -> Iterator[Any]:
    with served(tree[1]) as srv:
        yield srv


@pytest.fixture
def mnt(tmp_path: Path, server: Any) -> Iterator[SimMount]:
    """A fresh mount with an empty cache of its own, and an event log."""
    (tmp_path / "mnt").mkdir()
    opts = MountOptions(cache=tmp_path / "cache", log=tmp_path / "log.evt")
    with SimMount(server.url, tmp_path / "mnt", opts) as m:
        yield m


def _files(root: Path) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# ---------------------------------------------------------------- read-back


def test_every_file_reads_back_byte_identical(tree: tuple[Path, Path], mnt: SimMount) -> None:
    src, _ = tree
    want = _files(src)
    got = _files(mnt.path)
    assert sorted(got) == sorted(want)
    assert any(k.endswith(".onnx") for k in got)
    for rel, p in want.items():
        data = (mnt.path / rel).read_bytes()
        assert hashlib.sha256(data).digest() == hashlib.sha256(p.read_bytes()).digest(), rel
        st, sm = p.stat(), (mnt.path / rel).stat()
        assert (sm.st_size, sm.st_mode, int(sm.st_mtime)) == (
            st.st_size,
            st.st_mode,
            int(st.st_mtime),
        )
    assert os.readlink(mnt.path / "synthetic" / "link_to_tiny") == "tiny.txt"
    assert (mnt.path / "synthetic" / "link_to_tiny").read_bytes() == b"hello cvmfs\n"
    assert sorted(os.listdir(mnt.path)) == sorted(os.listdir(src))


def test_random_reads_match_source(tree: tuple[Path, Path], mnt: SimMount) -> None:
    src, _ = tree
    rel = "synthetic/chunked_22m.bin"
    data = (src / rel).read_bytes()
    rng = np.random.default_rng(7)
    fd = os.open(mnt.path / rel, os.O_RDONLY)
    try:
        for _ in range(200):
            off = int(rng.integers(0, len(data) + 100))
            n = int(rng.integers(1, 3 * MiB))
            assert os.pread(fd, n, off) == data[off : off + n]
    finally:
        os.close(fd)


def test_mount_is_read_only(mnt: SimMount) -> None:
    with pytest.raises(OSError) as e:
        os.open(mnt.path / "synthetic" / "tiny.txt", os.O_RDWR)
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError):
        (mnt.path / "new.txt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        (mnt.path / "no" / "such").read_bytes()


def test_onnxruntime_loads_every_cms_model_from_the_mount(mnt: SimMount) -> None:
    ort = pytest.importorskip("onnxruntime")
    models = sorted((mnt.path / "cms").rglob("*.onnx"))
    assert len(models) == len(list(CMS_MODELS.rglob("*.onnx"))) > 0
    for m in models:
        sess = ort.InferenceSession(str(m), providers=["CPUExecutionProvider"])
        assert sess.get_inputs(), m


# ---------------------------------------------------------------- xattrs


def test_xattrs_match_the_catalog(tree: tuple[Path, Path], mnt: SimMount) -> None:
    _, store = tree
    with open_store_catalog(store) as cat:
        entries = [e for e in cat.walk() if not e.is_dir and not e.is_symlink]
        assert entries
        for e in entries:
            p = str(mnt.path / e.path.lstrip("/"))
            chunks = cat.chunks(e.path)
            if chunks:
                rows = [(c.hash, c.offset, c.size) for c in chunks]
                assert os.getxattr(p, "user.chunks") == str(len(chunks)).encode()
                with pytest.raises(OSError) as ex:
                    os.getxattr(p, "user.hash")
                assert ex.value.errno == errno.ENODATA
            else:
                rows = [(e.hash, 0, e.size)]
                assert os.getxattr(p, "user.chunks") == b"1"
                assert e.hash is not None
                assert os.getxattr(p, "user.hash") == e.hash.encode()
            text = "hash,offset,size\n" + "".join(f"{h},{o},{s}\n" for h, o, s in rows)
            assert os.getxattr(p, "user.chunk_list") == text.encode()
            assert os.getxattr(p, "user.compression") == b"zlib"
            assert os.getxattr(p, "user.external_file") == b"0"
            assert os.listxattr(p) == []


def _real_root_xattrs() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CLIENT_VECTORS / "root_xattrs.json").read_text())
    return doc


def test_root_lists_exactly_what_the_real_client_lists(mnt: SimMount) -> None:
    real = _real_root_xattrs()
    # The recorded listxattr of a real 2.12 root: 36 names, the whole list twice over.
    assert len(real["listxattr_raw"]) == 72 and len(set(real["listxattr_raw"])) == 36
    assert os.listxattr(mnt.path) == real["listxattr_raw"]
    sub = mnt.path / "synthetic"
    assert os.listxattr(sub) == []
    assert os.listxattr(sub / "chunked_22m.bin") == []


def _kind(value: str) -> str:
    """The shape of a recorded value: what the emulated one must share."""
    if re.fullmatch(r"-?\d+", value):
        return "int"
    if re.fullmatch(r"\d+\.\d{3}", value):
        return "percent"
    return "text"


def test_every_root_xattr_answers_like_the_real_one(
    tree: tuple[Path, Path], mnt: SimMount, server: Any
) -> None:
    real = _real_root_xattrs()["values"]
    got = {name: os.getxattr(mnt.path, name).decode() for name in real}
    for name, value in real.items():
        if name in ("user.speed", "user.hitrate", "user.logbuffer", "user.pubkeys"):
            continue  # checked below: "n/a" or a number; free text; the store is unsigned
        if name in ("user.external_host", "user.tag", "user.repo_metainfo"):
            continue
        assert _kind(got[name]) == _kind(value), (name, got[name], value)
    url = server.url.rstrip("/")
    assert got["user.host"] == got["user.host_list"] == url
    assert got["user.external_host"] == "" and got["user.tag"] == ""
    assert got["user.proxy"] == "DIRECT"
    assert got["user.proxy_list"] == got["user.proxy_list_external"] == "DIRECT\n"
    # As the real client with CVMFS_HTTP_PROXY=DIRECT: user.timeout is the proxy timeout.
    assert (got["user.timeout"], got["user.timeout_direct"]) == (real["user.timeout"], "10")
    assert got["user.external_timeout"] == real["user.external_timeout"] == "10"
    assert got["user.version"] == real["user.version"] == "2.12.0.0"
    assert got["user.pid"] == str(mnt.pid)
    assert got["user.nclg"] == "1"
    assert got["user.usedfd"] == got["user.useddirp"] == "0"
    assert got["user.uptime"] == "0" and 0 <= int(got["user.expires"]) <= 4
    assert got["user.ncleanup24"] == "0" and got["user.timestamp_last_ioerr"] == "0"
    assert got["user.repo_metainfo"] == "metainfo not available"
    assert got["user.pubkeys"] == ""
    nofile = int(
        next(
            ln.split()[3]
            for ln in Path(f"/proc/{mnt.pid}/limits").read_text().splitlines()
            if ln.startswith("Max open files")
        )
    )
    assert got["user.maxfd"] == str(nofile - 512)
    assert got["user.speed"] == "n/a" or int(got["user.speed"]) >= 0
    logs = got["user.logbuffer"].splitlines()
    assert logs and all(
        re.fullmatch(r"\[\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d UTC\] \S.*", ln) for ln in logs
    )
    assert "switching proxy from (none) to DIRECT" in logs[0]
    # The counters of the catalog, computed here from the published store.
    with open_store_catalog(tree[1]) as cat:
        rows = list(cat.walk())
        regular = [r for r in rows if not r.is_dir and not r.is_symlink]
        chunked = [r for r in regular if r.is_chunked]
        n_chunks = sum(len(cat.chunks(r.path)) for r in chunked)
    want = {
        "chunked": len(chunked),
        "chunked_size": sum(r.size for r in chunked),
        "chunks": n_chunks,
        "dir": sum(1 for r in rows if r.is_dir),
        "external": 0,
        "external_file_size": 0,
        "file_size": sum(r.size for r in regular),
        "nested": 0,
        "regular": len(regular),
        "special": 0,
        "symlink": sum(1 for r in rows if r.is_symlink),
        "xattr": 0,
    }
    csv = "".join(f"{k},{v}\n" for k, v in want.items())
    assert list(want) == [ln.split(",")[0] for ln in real["user.repo_counters"].splitlines()]
    assert got["user.repo_counters"] == csv
    root_hash = got["user.root_hash"]
    assert got["user.catalog_counters"] == (
        f"catalog_hash: {root_hash}\ncatalog_mountpoint: \n{csv}"
    )
    assert int(got["user.inode_max"]) == len(rows)


def test_file_xattrs_answer_where_the_real_client_answers(mnt: SimMount) -> None:
    real = json.loads((CLIENT_VECTORS / "file_xattrs_r64_P1.json").read_text())
    p = mnt.path / "synthetic" / "chunked_22m.bin"
    for name, value in real.items():
        if value.startswith("<errno 61"):
            with pytest.raises(OSError) as e:
                os.getxattr(p, name)
            assert e.value.errno == errno.ENODATA, name
        else:
            got = os.getxattr(p, name).decode()  # answers (empty where the real one is empty)
            assert (got == "") == (value == ""), name
    assert os.getxattr(p, "user.timeout") == b"5"
    assert os.getxattr(p, "user.cmio_client_profile") == b"cvmfs-2.12"
    tiny = mnt.path / "synthetic" / "tiny.txt"
    assert os.getxattr(tiny, "user.lhash") == b"Not in cache"
    data = tiny.read_bytes()
    assert os.getxattr(tiny, "user.lhash") == hashlib.sha1(data).hexdigest().encode()
    assert os.getxattr(tiny, "user.direct_io") == b"0"
    with pytest.raises(OSError) as e:
        os.getxattr(mnt.path / "synthetic", "user.no_such_thing")
    assert e.value.errno == errno.ENODATA


def test_timeout_xattrs_follow_the_options(tmp_path: Path, server: Any) -> None:
    (tmp_path / "mnt").mkdir()
    opts = MountOptions(cache=tmp_path / "cache", timeout_s=7.0, timeout_direct_s=3.0)
    with SimMount(server.url, tmp_path / "mnt", opts) as m:
        assert os.getxattr(m.path, "user.timeout") == b"7"
        assert os.getxattr(m.path, "user.timeout_direct") == b"3"
        assert os.getxattr(m.path, "user.external_timeout") == b"3"


def test_traffic_xattrs_follow_downloads(tree: tuple[Path, Path], mnt: SimMount) -> None:
    _, store = tree
    root = mnt.path
    # After mounting with a cold cache the catalog is the one object downloaded so far.
    assert os.getxattr(root, "user.ndownload") == b"1"
    assert os.getxattr(root, "user.hitrate") == b"0.000"
    assert os.getxattr(root, "user.nioerr") == b"0"
    p = root / "synthetic" / "below_min.bin"
    h = os.getxattr(p, "user.hash").decode()
    wire = (store / "data" / h[:2] / h[2:]).stat().st_size
    before = mnt.counters()["download.sz_transferred_bytes"]
    p.read_bytes()
    assert os.getxattr(root, "user.ndownload") == b"2"
    assert os.getxattr(root, "user.rx") == str((before + wire) // 1024).encode()
    assert os.getxattr(root, "user.hitrate") == b"0.000"
    (root / "synthetic" / "at_min.bin").read_bytes()
    # The second open finds the object in the cache: a fetch call, no download.
    (root / "synthetic" / "at_min.bin").read_bytes()
    c = mnt.counters()
    assert (c["fetch.n_invocations"], c["fetch.n_downloads"]) == (4, 3)
    assert os.getxattr(root, "user.hitrate") == b"25.000"
    speed = os.getxattr(root, "user.speed").decode()
    assert speed == "n/a" or int(speed) >= 0


@pytest.fixture(scope="module")
def raw_xattr_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """P1 r3_s7.bin (unchunked) and P5 r32_s77.bin (1059 chunks) published as the vectors."""
    base = tmp_path_factory.mktemp("rawx")
    _, r3 = vector_file("P1", "r3_s7_bin")
    _, r32 = vector_file("P5", "r32_s77_bin")
    publish_tree({"vec/P1/r3_s7.bin": r3}, base / "s1", base / "st1", P1)
    publish_tree({"vec/P5/r32_s77.bin": r32}, base / "s5", base / "st5", P5)
    merge_stores(base / "store", base / "st1", base / "st5")
    return base / "store"


def test_xattrs_byte_identical_to_the_real_client(raw_xattr_store: Path, tmp_path: Path) -> None:
    raw = CHUNK_VECTORS / "raw_xattrs"
    forms = {
        "user.chunk_list": "user.chunk_list",
        "user.chunk_list_tilde_0": "user.chunk_list~0",
        "user.chunk_list_tilde_1": "user.chunk_list~1",
        "user.chunk_list_tilde_q": "user.chunk_list~?",
        "user.chunk_list_at_1": "user.chunk_list@1",
        "user.chunk_list_at_q": "user.chunk_list@?",
        "user.chunks": "user.chunks",
        "user.hash": "user.hash",
        "user.compression": "user.compression",
    }
    files = {"P1_r3_s7": "vec/P1/r3_s7.bin", "P5_r32_s77": "vec/P5/r32_s77.bin"}
    (tmp_path / "mnt").mkdir()
    compared = 0
    with (
        served(raw_xattr_store) as srv,
        SimMount(srv.url, tmp_path / "mnt", MountOptions(cache=tmp_path / "cache")) as m,
    ):
        for capture in sorted(raw.iterdir()):
            prefix, _, form = capture.name.removesuffix(".txt").partition("__")
            value = os.getxattr(m.path / files[prefix], forms[form])
            assert value == capture.read_bytes(), capture.name
            compared += 1
        big = m.path / files["P5_r32_s77"]
        # Pages past the end: machine mode has no such attribute, human mode explains.
        with pytest.raises(OSError) as e:
            os.getxattr(big, "user.chunk_list~2")
        assert e.value.errno == errno.ENODATA
        assert os.getxattr(big, "user.chunk_list@2").startswith(
            b"Page requested does not exists. There are 2 pages available.\n"
        )
        assert os.getxattr(big, "user.chunks~?") == b"num_pages, 1"
        assert os.getxattr(big, "user.chunk_list@0").startswith(
            b"# Access page at idx: 0. Total num pages: 2 "
        )
    assert compared == len(list(raw.iterdir())) == 12


# ---------------------------------------------------------------- fetch fidelity


def _w_pread_1m(m: Path) -> None:
    fd = os.open(m / "vec/P2/r40_s12345.bin", os.O_RDONLY)
    try:
        assert len(os.pread(fd, MiB, 10485760)) == MiB
    finally:
        os.close(fd)


def _w_sequential_1m(m: Path) -> None:
    with open(m / "vec/P1/halfzero.bin", "rb", buffering=0) as f:
        while f.read(MiB):
            pass


def _w_mmap_touch(m: Path) -> None:
    fd = os.open(m / "vec/P1/r40_s12345.bin", os.O_RDONLY)
    try:
        with mmap.mmap(fd, 8 * MiB, prot=mmap.PROT_READ) as mm:
            total = sum(mm[off] for off in range(0, 8 * MiB, 4096))
            assert total >= 0
    finally:
        os.close(fd)


def _w_whole_file(m: Path) -> None:
    assert len((m / "vec/P2/r3_s7.bin").read_bytes()) == 3 * MiB


def _w_backwards(m: Path) -> None:
    p = m / "vec/P2/model.safetensors"
    fd = os.open(p, os.O_RDONLY)
    try:
        off = os.fstat(fd).st_size - 4096
        while off >= 0:
            assert len(os.pread(fd, 4096, off)) == 4096
            off -= 8 * MiB
    finally:
        os.close(fd)


def _w_two_files(m: Path) -> None:
    for d in ("P2", "P1"):
        fd = os.open(m / f"vec/{d}/model.safetensors", os.O_RDONLY)
        try:
            assert len(os.pread(fd, 4096, 0)) == 4096
        finally:
            os.close(fd)


WORKLOADS: dict[str, Callable[[Path], None]] = {
    "P2 r40_s12345.bin: one 1 MiB pread at offset 10485760": _w_pread_1m,
    "P1 halfzero.bin: sequential read in 1 MiB blocks": _w_sequential_1m,
    "P1 r40_s12345.bin: mmap, touch one byte of every 4 KiB page of the first 8 MiB in order": (
        _w_mmap_touch
    ),
    "P2 r3_s7.bin (3 chunks at 1/2/4): read whole file": _w_whole_file,
    "P2 model.safetensors: 4 KiB preads backwards every 8 MiB from size-4096": _w_backwards,
    "P2 then P1 model.safetensors: 4 KiB pread at offset 0 of each": _w_two_files,
}


@pytest.fixture(scope="module")
def vec_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fetch-vector files under vec/P1 (4/8/16 MiB) and vec/P2 (1/2/4 MiB)."""
    base = tmp_path_factory.mktemp("vecstore")
    names = {
        "P1": [
            ("halfzero.bin", "halfzero_bin"),
            ("r40_s12345.bin", "r40_s12345_bin"),
            ("model.safetensors", "model_safetensors"),
        ],
        "P2": [
            ("r3_s7.bin", "r3_s7_bin"),
            ("r40_s12345.bin", "r40_s12345_bin"),
            ("model.safetensors", "model_safetensors"),
        ],
    }
    for tag, params in (("P1", P1), ("P2", P2)):
        files = {f"vec/{tag}/{n}": vector_file(tag, stem)[1] for n, stem in names[tag]}
        publish_tree(files, base / f"src{tag}", base / f"st{tag}", params)
    merge_stores(base / "store", base / "stP1", base / "stP2")
    return base / "store"


def test_fetch_vectors_of_the_real_client(vec_store: Path, tmp_path: Path) -> None:
    vectors = json.loads((FETCH_VECTORS / "real-cvmfs-2.12.json").read_text())
    assert {v["workload"] for v in vectors} == set(WORKLOADS)
    (tmp_path / "mnt").mkdir()
    log = tmp_path / "log.evt"
    spans = []
    with served(vec_store) as srv:
        opts = MountOptions(cache=tmp_path / "cache", log=log)
        with SimMount(srv.url, tmp_path / "mnt", opts) as m:
            for v in vectors:
                m.cleanup()  # cold: client cache emptied, page cache dropped
                before = m.counters()
                n_req = len(srv.requests().events)
                t0 = _now()
                WORKLOADS[v["workload"]](m.path)
                t1 = _now()
                after = m.counters()
                spans.append((v, t0, t1, counter_delta(before, after)))
                served_paths = _served_objects(srv, n_req, len(v["fetched_objects_in_order"]))
                assert served_paths == v["fetched_objects_in_order"], v["workload"]
    for v, t0, t1, delta in spans:
        got = fetches(log, t0, t1)
        assert [p for p, _, _ in got] == v["fetched_objects_in_order"], v["workload"]
        assert all(r > 0 for _, _, r in got)
        assert sum(w for _, w, _ in got) == v["counter_deltas"]["download.sz_transferred_bytes"]
        for name, want in v["counter_deltas"].items():
            assert delta[name] == want, (v["workload"], name)


def _now() -> int:
    import time

    return time.monotonic_ns()


def _served_objects(srv: Any, skip: int, expect: int = 0) -> list[str]:
    """Object paths the server answered since request number ``skip``, in order.

    Waits (briefly) for ``expect`` of them: the server logs a request after its last byte.
    """
    log = srv.requests(skip + expect)
    ev = log.events[skip:]
    ev = ev[ev["t_start_ns"].argsort(kind="stable")]
    out = []
    for e in ev:
        path = log.files[int(e["file_id"])].path.lstrip("/")
        if path.startswith("data/"):
            out.append(path)
    return out


# ---------------------------------------------------------------- on-demand behaviour


def _catalog_chunks(store: Path, repo_path: str) -> list[Any]:
    with open_store_catalog(store) as cat:
        return list(cat.chunks(repo_path))


def test_first_mib_of_a_40mib_file_fetches_exactly_its_first_chunk(
    vec_store: Path, tmp_path: Path
) -> None:
    chunks = _catalog_chunks(vec_store, "/vec/P1/r40_s12345.bin")
    assert len(chunks) > 2
    (tmp_path / "mnt").mkdir()
    with (
        served(vec_store) as srv,
        SimMount(
            srv.url, tmp_path / "mnt", MountOptions(cache=tmp_path / "c", log=tmp_path / "l.evt")
        ) as m,
    ):
        p = m.path / "vec/P1/r40_s12345.bin"
        b = m.counters()
        with open(p, "rb", buffering=0) as f:
            assert len(f.read(MiB)) == MiB
        d = counter_delta(b, m.counters())
        assert d["fetch.n_downloads"] == 1
        assert d["cvmfs.n_fs_read"] == 9  # as the real client: 9 FUSE reads of 128 KiB
        c0 = chunks[0]
        assert _served_objects(srv, 0, 3)[-1] == f"data/{c0.hash[:2]}/{c0.hash[2:]}P"
        assert (
            d["download.sz_transferred_bytes"]
            == (vec_store / "data" / c0.hash[:2] / (c0.hash[2:] + "P")).stat().st_size
        )
        # A 4 KiB read across the boundary of chunks 1 and 2 fetches exactly those two.
        b = m.counters()
        n = len(srv.requests().events)
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            edge = chunks[2].offset
            assert len(os.pread(fd, 4096, edge - 2048)) == 4096
        finally:
            os.close(fd)
        want = [f"data/{c.hash[:2]}/{c.hash[2:]}P" for c in chunks[1:3]]
        assert _served_objects(srv, n, 2) == want
        assert counter_delta(b, m.counters())["fetch.n_downloads"] == 2


def test_opening_chunked_file_fetches_nothing(mnt: SimMount) -> None:
    b = mnt.counters()
    fd = os.open(mnt.path / "synthetic" / "chunked_22m.bin", os.O_RDONLY)
    os.close(fd)
    d = counter_delta(b, mnt.counters())
    assert d["cvmfs.n_fs_open"] == 1
    assert d["fetch.n_downloads"] == 0 and d["download.n_requests"] == 0


def test_unchunked_file_is_fetched_whole_at_open_then_cache_hits(
    tree: tuple[Path, Path], server: Any, tmp_path: Path
) -> None:
    _, store = tree
    rel = "synthetic/below_min.bin"
    cache = tmp_path / "cache"
    (tmp_path / "m1").mkdir()
    with SimMount(server.url, tmp_path / "m1", MountOptions(cache=cache)) as m:
        h = os.getxattr(m.path / rel, "user.hash").decode()
        obj = store / "data" / h[:2] / h[2:]
        b = m.counters()
        n = len(server.requests().events)
        fd = os.open(m.path / rel, os.O_RDONLY)  # no read at all
        d = counter_delta(b, m.counters())
        assert d["fetch.n_downloads"] == 1
        assert d["download.sz_transferred_bytes"] == obj.stat().st_size
        assert d["cvmfs.n_fs_read"] == 0
        assert _served_objects(server, n, 1) == [f"data/{h[:2]}/{h[2:]}"]
        # Cached decompressed, like the real client: <cache>/XX/<rest>.
        cached = cache / h[:2] / h[2:]
        assert cached.read_bytes() == zlib.decompress(obj.read_bytes())
        os.close(fd)
        # Second open after the page cache is dropped: data comes from the cache.
        b = m.counters()
        fd = os.open(m.path / rel, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert len(os.pread(fd, MiB, 0)) == MiB
        os.close(fd)
        d = counter_delta(b, m.counters())
        assert d["fetch.n_downloads"] == 0 and d["download.n_requests"] == 0
        assert d["cvmfs.n_fs_read"] > 0
    # Another mount sharing the cache fetches nothing either.
    (tmp_path / "m2").mkdir()
    with SimMount(server.url, tmp_path / "m2", MountOptions(cache=cache)) as m:
        b = m.counters()
        assert (m.path / rel).read_bytes() == (tree[0] / rel).read_bytes()
        d = counter_delta(b, m.counters())
        assert d["fetch.n_downloads"] == 0 and d["download.n_requests"] == 0
        assert os.getxattr(m.path, "user.hitrate") == b"100.000"


def test_keep_cache_second_open_issues_no_fuse_reads(mnt: SimMount) -> None:
    for rel in ("synthetic/below_min.bin", "synthetic/chunked_22m.bin"):
        first = (mnt.path / rel).read_bytes()
        b = mnt.counters()
        assert (mnt.path / rel).read_bytes() == first
        d = counter_delta(b, mnt.counters())
        assert d["cvmfs.n_fs_open"] == 1
        assert d["cvmfs.n_fs_read"] == 0, rel


def test_concurrent_opens_share_one_download(mnt: SimMount, server: Any) -> None:
    import threading

    rel = mnt.path / "synthetic" / "at_min.bin"
    n = len(server.requests().events)
    out: list[bytes] = []
    threads = [threading.Thread(target=lambda: out.append(rel.read_bytes())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 6 and len(set(out)) == 1
    assert len(_served_objects(server, n, 1)) == 1


def test_event_log_records_fuse_requests_and_fetches(tmp_path: Path, server: Any) -> None:
    from cvmfs_modelio.core.events import Op, Source, read_event_file

    (tmp_path / "mnt").mkdir()
    log = tmp_path / "log.evt"
    opts = MountOptions(cache=tmp_path / "c", log=log)
    with SimMount(server.url, tmp_path / "mnt", opts) as m:
        fd = os.open(m.path / "synthetic" / "chunked_22m.bin", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # exactly one FUSE read
            assert len(os.pread(fd, 4096, 5 * MiB)) == 4096
        finally:
            os.close(fd)
        # The kernel sends FUSE_RELEASE asynchronously after the last close: wait until
        # the client has handled it (its open-file count is back to 0) before unmounting.
        deadline = time.monotonic() + 10
        while os.getxattr(m.path, "user.usedfd") != b"0" and time.monotonic() < deadline:
            time.sleep(0.01)
    ev = read_event_file(log)
    assert ev.meta["source"] == "cmio-simfs" and ev.meta["clock"] == "CLOCK_MONOTONIC"
    e = ev.events
    ops = [(int(s), int(o)) for s, o in zip(e["source"], e["op"], strict=True)]
    assert (Source.FUSE, Op.FUSE_OPEN) in ops and (Source.FUSE, Op.FUSE_RELEASE) in ops
    reads = e[(e["source"] == Source.FUSE) & (e["op"] == Op.FUSE_READ)]
    assert [(int(r["offset"]), int(r["length"]), int(r["result"])) for r in reads] == [
        (5 * MiB, 4096, 4096)
    ]
    assert ev.files[int(reads["file_id"][0])].path == "/synthetic/chunked_22m.bin"
    fetched = e[(e["source"] == Source.FETCH)]
    paths = [ev.files[int(i)].path for i in fetched["file_id"]]
    # The root catalog at mount time, then the one chunk holding offset 5 MiB.
    assert len(paths) == 2 and paths[0].endswith("C") and paths[1].endswith("P")
    assert [int(a) for a in fetched["aux"]] == [200, 200]
    assert ev.meta["counters"]["cvmfs.n_fs_read"] == len(reads)


def test_sigusr2_writes_the_event_log_while_mounted(tmp_path: Path, server: Any) -> None:
    """SIGUSR2 writes the log as it stands (atomically) while the mount goes on serving; the
    log written at unmount holds the flushed events and those after them."""
    import signal

    from cvmfs_modelio.core.events import Op, Source, read_event_file

    (tmp_path / "mnt").mkdir()
    log = tmp_path / "log.evt"
    opts = MountOptions(cache=tmp_path / "c", log=log)

    def read_at(m: SimMount, offset: int) -> None:
        fd = os.open(m.path / "synthetic" / "chunked_22m.bin", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # exactly one FUSE read
            assert len(os.pread(fd, 4096, offset)) == 4096
        finally:
            os.close(fd)

    def fuse_reads(ev: Any) -> list[int]:
        e = ev.events
        r = e[(e["source"] == Source.FUSE) & (e["op"] == Op.FUSE_READ)]
        return [int(o) for o in r["offset"]]

    with SimMount(server.url, tmp_path / "mnt", opts) as m:
        read_at(m, 5 * MiB)
        assert not log.exists()  # nothing is written before a flush or the unmount
        os.kill(int(os.getxattr(m.path, "user.pid")), signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        flushed = read_event_file(log)
        assert flushed.meta["final"] is False and flushed.meta["source"] == "cmio-simfs"
        assert fuse_reads(flushed) == [5 * MiB]
        assert flushed.meta["counters"]["cvmfs.n_fs_read"] == 1
        # no temporary file left beside it, and the mount still serves
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "log.evt", "mnt"]
        read_at(m, 17 * MiB)
        deadline = time.monotonic() + 10
        while os.getxattr(m.path, "user.usedfd") != b"0" and time.monotonic() < deadline:
            time.sleep(0.01)
    final = read_event_file(log)
    assert final.meta["final"] is True
    assert fuse_reads(final) == [5 * MiB, 17 * MiB]
    n = len(flushed.events)
    assert (final.events[:n] == flushed.events).all()  # the flushed events, unchanged


def test_prefetch_fetches_the_next_chunks(tmp_path: Path, server: Any) -> None:
    import time

    (tmp_path / "mnt").mkdir()
    opts = MountOptions(cache=tmp_path / "c", prefetch=2)
    with SimMount(server.url, tmp_path / "mnt", opts) as m:
        p = m.path / "synthetic" / "zeros_40m.bin"  # 16+16+8 MiB chunks
        assert os.getxattr(p, "user.chunks") == b"3"
        with open(p, "rb") as f:
            assert f.read(4096) == bytes(4096)
        deadline = time.monotonic() + 60
        # catalog + chunk 0 + chunk 2: chunks 0 and 1 are the same object (zeros).
        while m.counters()["fetch.n_downloads"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert m.counters()["cmio.n_prefetch"] == 2
        b = m.counters()
        assert p.read_bytes() == bytes(40 * MiB)
        assert counter_delta(b, m.counters())["fetch.n_downloads"] == 0


# ---------------------------------------------------------------- lifecycle


def test_sigterm_unmounts_cleanly(tmp_path: Path, server: Any) -> None:
    (tmp_path / "mnt").mkdir()
    m = SimMount(server.url, tmp_path / "mnt", MountOptions(cache=tmp_path / "c"))
    m.start()
    try:
        assert mount_type(m.path) == FSTYPE
        assert m.proc is not None
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=30) == 0
        assert mount_type(m.path) is None
    finally:
        m.stop()


def test_sigkill_leaves_a_stale_mount_that_umount_and_remount_clear(
    tmp_path: Path, server: Any
) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    opts = MountOptions(cache=tmp_path / "c")
    m = SimMount(server.url, mp, opts)
    m.start()
    assert m.proc is not None
    m.proc.kill()
    m.proc.wait()
    assert is_stale(mp) and mount_type(mp) == FSTYPE
    with SimMount(server.url, mp, opts) as m2:  # the next mount clears it
        assert (m2.path / "synthetic" / "tiny.txt").read_bytes() == b"hello cvmfs\n"
        assert m2.proc is not None
        m2.proc.kill()
        m2.proc.wait()
        assert is_stale(mp)
        umount(mp)  # `sim umount`
        assert mount_type(mp) is None and not is_stale(mp)
    m.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvmfs_modelio.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_mount_umount_wipe_cache(tmp_path: Path, server: Any) -> None:
    mp, cache = tmp_path / "mnt", tmp_path / "cache"
    mp.mkdir()
    r = _cli("sim", "mount", server.url, str(mp), "--cache", str(cache))
    assert r.returncode == 0, r.stderr
    try:
        assert (mp / "synthetic" / "tiny.txt").read_bytes() == b"hello cvmfs\n"
        r = _cli("sim", "mount", server.url, str(mp), "--cache", str(cache))
        assert r.returncode == 2 and "already mounted" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        r = _cli("sim", "umount", str(mp))
    assert r.returncode == 0, r.stderr
    assert mount_type(mp) is None
    assert any(p.is_file() for p in cache.glob("??/*"))
    r = _cli("sim", "wipe-cache", str(cache))
    assert r.returncode == 0 and not any(p.is_file() for p in cache.glob("??/*"))
    r = _cli("sim", "wipe-cache", str(tmp_path))
    assert r.returncode == 2 and "not a cmio-simfs cache" in r.stderr
    r = _cli("sim", "umount", str(mp))
    assert r.returncode == 2 and r.stderr.strip().endswith("not mounted")


def test_cli_umount_returns_after_the_client_wrote_its_log(tmp_path: Path, server: Any) -> None:
    from cvmfs_modelio.core.events import Op, Source, read_event_file

    for i in range(3):  # the client writes the log on its way out: umount must wait for it
        mp, log = tmp_path / f"mnt{i}", tmp_path / f"log{i}.evt"
        mp.mkdir()
        r = _cli(
            "sim",
            "mount",
            server.url,
            str(mp),
            "--cache",
            str(tmp_path / f"c{i}"),
            "--log",
            str(log),
        )
        assert r.returncode == 0, r.stderr
        try:
            assert (mp / "synthetic" / "tiny.txt").read_bytes() == b"hello cvmfs\n"
            pid = int(os.getxattr(mp, "user.pid"))
        finally:
            r = _cli("sim", "umount", str(mp))
        assert r.returncode == 0, r.stderr
        # the client is gone (or a zombie of init) when umount returns
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        ev = read_event_file(log)  # complete at once, not "being written"
        e = ev.events
        assert ((e["source"] == Source.FUSE) & (e["op"] == Op.FUSE_OPEN)).sum() >= 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/x", "not an http:// URL"),
        ("http://127.0.0.1:1", "Couldn't connect to server"),
    ],
)
def test_cli_mount_failure_is_one_line(tmp_path: Path, url: str, message: str) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = _cli("sim", "mount", url, str(mp), "--cache", str(tmp_path / "c"), "--timeout", "2")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr
    assert mount_type(mp) is None


def test_cli_mount_rejects_a_store_that_is_not_one(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / ".cvmfspublished").write_text("Cnothex\n--\n0000\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    with served(junk) as srv:
        r = _cli("sim", "mount", srv.url, str(mp), "--cache", str(tmp_path / "c"))
    assert r.returncode == 2 and "manifest checksum does not match" in r.stderr
    assert mount_type(mp) is None


def test_parse_counters_reads_cvmfs_talk_format() -> None:
    text = "Raw Counters:\ncvmfs.n_fs_open|3|Overall number\nbad line\nx|notint|y\n"
    assert parse_counters(text) == {"cvmfs.n_fs_open": 3}


# ---------------------------------------------------------------- other servers, netem


@pytest.mark.parametrize(
    ("server_kind", "proxy"),
    [
        pytest.param("nginx", None, marks=pytest.mark.tools("nginx")),
        pytest.param("builtin", "squid", marks=pytest.mark.tools("squid")),
    ],
)
def test_reads_back_through_nginx_and_squid(
    tree: tuple[Path, Path], tmp_path: Path, server_kind: str, proxy: str | None
) -> None:
    src, store = tree
    (tmp_path / "mnt").mkdir()
    with served(store, server=server_kind, proxy=proxy) as srv:
        opts = MountOptions(cache=tmp_path / "c", proxy=srv.proxy)
        with SimMount(srv.url, tmp_path / "mnt", opts) as m:
            for rel, p in _files(src).items():
                assert (m.path / rel).read_bytes() == p.read_bytes(), rel
            assert os.getxattr(m.path, "user.proxy") == (srv.proxy or "DIRECT").encode()
            n_objects = m.counters()["fetch.n_downloads"]
        origin = [
            log_path
            for log_path in (
                srv.requests(1).files[int(i)].path for i in srv.requests(1).events["file_id"]
            )
            if "/data/" in log_path
        ]
        assert len(origin) == n_objects  # every object came from the stratum exactly once
        if proxy:
            assert len(srv.proxy_requests(n_objects).events) >= n_objects


def test_mount_through_the_network_emulator(tree: tuple[Path, Path], tmp_path: Path) -> None:
    src, store = tree
    (tmp_path / "mnt").mkdir()
    log = tmp_path / "log.evt"
    rtt_ms = 20.0
    with served(store) as srv:
        opts = MountOptions(cache=tmp_path / "c", rtt_ms=rtt_ms, bandwidth=200 * MiB, log=log)
        with SimMount(srv.url, tmp_path / "mnt", opts) as m:
            host = os.getxattr(m.path, "user.host").decode()
            assert host != srv.url and host.startswith("http://127.0.0.1:")
            rel = "synthetic/chunked_22m.bin"
            assert (m.path / rel).read_bytes() == (src / rel).read_bytes()
    from cvmfs_modelio.core.events import Op, Source, read_event_file

    e = read_event_file(log).events
    f = e[(e["source"] == Source.FETCH) & (e["op"] == Op.FETCH)]
    assert len(f) >= 2
    # Each request waits at least one emulated round trip (a bound, not a speed).
    assert int(f["duration_ns"].min()) >= int(rtt_ms * 1e6)


# ---------------------------------------------------------------- one interface


def test_cvmfs_interface_on_the_emulated_mount(tree: tuple[Path, Path], mnt: SimMount) -> None:
    from cvmfs_modelio.mounts import SIM, find_mount, open_mount

    _, store = tree
    rel = "/synthetic/chunked_22m.bin"
    cm = open_mount(mnt.path / "synthetic")
    assert cm.kind == SIM and cm.root == mnt.path
    assert find_mount(mnt.path / rel.lstrip("/")).mountpoint == mnt.path
    assert cm.repository() == "sim.cvmfs.io"
    p = cm.locate(rel)
    assert cm.repo_path(p) == rel
    assert cm.find("*.onnx", "cms") == sorted((mnt.path / "cms").rglob("*.onnx"))
    layout = cm.layout(p)
    chunks = _catalog_chunks(store, rel)
    assert list(layout.offsets) == [c.offset for c in chunks]
    assert list(layout.sizes) == [c.size for c in chunks]
    assert layout.hashes == tuple(c.hash for c in chunks)
    # Counters with the real client's names; a cold cache costs downloads again.
    before = cm.counters()
    for name in (
        "cvmfs.n_fs_open",
        "cvmfs.n_fs_read",
        "fetch.n_downloads",
        "download.sz_transferred_bytes",
        "download.n_requests",
    ):
        assert name in before
    data = p.read_bytes()
    warm = cm.counters()
    assert warm["fetch.n_downloads"] - before["fetch.n_downloads"] == len(chunks)
    cm.drop_page_cache([p])  # warm: page cache gone, client cache kept
    assert p.read_bytes() == data
    after_warm = cm.counters()
    assert after_warm["fetch.n_downloads"] == warm["fetch.n_downloads"]
    assert after_warm["cvmfs.n_fs_read"] > warm["cvmfs.n_fs_read"]
    cm.clear_caches()  # cold: both gone, without opening any file
    cold = cm.counters()
    assert cold["cvmfs.n_fs_open"] == after_warm["cvmfs.n_fs_open"]
    assert p.read_bytes() == data
    assert cm.counters()["fetch.n_downloads"] - cold["fetch.n_downloads"] == len(chunks)


def test_cvmfs_interface_refuses_other_file_systems(tmp_path: Path) -> None:
    from cvmfs_modelio.core.errors import UsageError
    from cvmfs_modelio.mounts import open_mount

    with pytest.raises(UsageError, match="not on a CVMFS mount"):
        open_mount(tmp_path)


def test_client_info_of_the_emulated_mount(mnt: SimMount, server: Any) -> None:
    from cvmfs_modelio.mounts import open_mount

    info = open_mount(mnt.path / "synthetic").client_info()
    assert (info.kind, info.version, info.pid) == ("sim", "2.12.0.0", mnt.pid)
    assert info.client_profile == mnt.client_profile == "cvmfs-2.12"
    assert (info.timeout_s, info.timeout_direct_s, info.proxy, info.catalogs) == (
        5,
        10,
        "DIRECT",
        1,
    )
    assert info.host == server.url.rstrip("/") and info.revision >= 1
    assert info.repo_counters["regular"] > 0
