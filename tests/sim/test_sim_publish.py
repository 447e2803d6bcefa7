"""``sim publish`` writes a store whose object names are the real CVMFS publisher's."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import socket
import stat
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio import _native
from cvmfs_modelio.cli import main
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.catalog import Catalog, open_store_catalog
from cvmfs_modelio.sim.publish import PublishParams, iter_objects, publish
from cvmfs_modelio.sim.store import (
    FLAG_CHUNKED,
    FLAG_DIR,
    FLAG_FILE,
    FLAG_LINK,
    MANIFEST,
    md5path,
    object_path,
    parse_manifest,
    read_manifest,
)
from tests.conftest import CMS_MODELS, chunk_vectors, load_vector, vector_content

SMALL = PublishParams(min_size=64 * 1024, avg_size=128 * 1024, max_size=256 * 1024)


def _rand(seed: int, n: int) -> bytes:
    return np.random.Generator(np.random.PCG64(seed)).bytes(n)


def _names(data: bytes, p: PublishParams) -> list[tuple[int, int, str]]:
    """(offset, size, object name) per piece, computed independently of the publisher."""
    offs = [0]
    if p.chunking and len(data) > p.min_size:
        offs = _native.xor32_offsets(data, p.min_size, p.avg_size, p.max_size).tolist()
    bounds = [*offs, len(data)]
    out = []
    for a, b in itertools.pairwise(bounds):
        stored = zlib.compress(data[a:b], 6) if p.compression == "zlib" else data[a:b]
        out.append((a, b - a, hashlib.sha1(stored).hexdigest()))
    return out


def _snapshot(store: Path) -> dict[str, str]:
    """Every file under ``store`` with the SHA-1 of its content (to prove it is unchanged)."""
    out = {}
    for dirpath, _dirs, files in os.walk(store):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(store))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------- real publisher vectors


def _vector_groups() -> dict[tuple[int, int, int], list[Path]]:
    groups: dict[tuple[int, int, int], list[Path]] = defaultdict(list)
    for v in chunk_vectors():
        p = load_vector(v)["params"]
        key = (p["CVMFS_MIN_CHUNK_SIZE"], p["CVMFS_AVG_CHUNK_SIZE"], p["CVMFS_MAX_CHUNK_SIZE"])
        groups[key].append(v)
    return dict(groups)


_GROUPS = _vector_groups()


def test_every_vector_is_in_a_group() -> None:
    assert sum(len(v) for v in _GROUPS.values()) == len(chunk_vectors()) >= 15


@pytest.mark.parametrize("params", sorted(_GROUPS), ids=lambda k: "_".join(map(str, k)))
def test_real_publisher_object_names(params: tuple[int, int, int], tmp_path: Path) -> None:
    """Publishing each test-vector file yields exactly the real publisher's objects."""
    src = tmp_path / "src"
    src.mkdir()
    vecs = [load_vector(p) for p in _GROUPS[params]]
    for vec in vecs:
        data = vector_content(vec)
        assert data is not None, vec["content"]
        assert hashlib.sha256(data).hexdigest() == vec["sha256"]
        (src / vec["file"]).write_bytes(data)
    store = tmp_path / "store"
    res = publish(src, store, PublishParams(*params))
    assert res.files == len(vecs)
    with open_store_catalog(store) as cat:
        for vec in vecs:
            path = "/" + vec["file"]
            e = cat.lookup(path)
            assert e is not None
            assert e.size == vec["size"]
            expected = [(c["offset"], c["size"], c["object_sha1"]) for c in vec["chunks"]]
            if vec["chunked"]:
                assert e.flags == FLAG_FILE | FLAG_CHUNKED
                assert e.hash is None
                got = [(c.offset, c.size, c.hash) for c in cat.chunks(path)]
                suffix = "P"
            else:
                assert e.flags == FLAG_FILE
                assert cat.chunks(path) == []
                got = [(0, e.size, e.hash)]
                suffix = ""
            assert got == expected
            # The objects are there, named by their content, and decompress to the file.
            content = hashlib.sha256()
            for _off, _size, name in expected:
                obj = object_path(store, name, suffix).read_bytes()
                assert hashlib.sha1(obj).hexdigest() == name
                content.update(zlib.decompress(obj))
            assert content.hexdigest() == vec["sha256"]


# ----------------------------------------------------------------- CMS models


def _expected_tree(src: Path) -> Iterator[tuple[str, os.stat_result]]:
    yield "", os.lstat(src)
    for dirpath, dirs, files in os.walk(src):
        for n in dirs + files:
            p = Path(dirpath) / n
            yield "/" + str(p.relative_to(src)), os.lstat(p)


def test_publish_cms_models_catalog_and_manifest(tmp_path: Path, capsys: Any) -> None:
    store = tmp_path / "store"
    assert main(["sim", "publish", str(CMS_MODELS), str(store)]) == 0
    out = capsys.readouterr().out
    assert "published revision 1 of sim.cvmfs.io" in out
    for stage in ("read", "chunk", "compress", "hash", "write", "register"):
        assert f"\n  {stage} " in out
    m = read_manifest(store)
    assert m is not None
    assert m.revision == 1 and m.repository == "sim.cvmfs.io"
    cat_obj = object_path(store, m.catalog_hash, "C")
    assert cat_obj.stat().st_size == m.catalog_size
    assert hashlib.sha1(cat_obj.read_bytes()).hexdigest() == m.catalog_hash
    text = (store / MANIFEST).read_text().splitlines()
    assert text[2] == "Rd41d8cd98f00b204e9800998ecf8427e" and text[3] == "D240"
    assert text[-2] == "--"
    with open_store_catalog(store) as cat:
        props = cat.properties()
        assert props == {
            "schema": "cmio-1",
            "revision": "1",
            "compression": "zlib",
            "min_chunk": "4194304",
            "avg_chunk": "8388608",
            "max_chunk": "16777216",
            "chunking": "1",
            "repository": "sim.cvmfs.io",
        }
        tree = dict(_expected_tree(CMS_MODELS))
        walked = {e.path: e for e in cat.walk()}
        assert set(walked) == set(tree)
        for path, st_ in tree.items():
            e = walked[path]
            assert e.mode == st_.st_mode and e.mtime == int(st_.st_mtime)
            assert (e.uid, e.gid) == (st_.st_uid, st_.st_gid)
            assert e.name == path.rsplit("/", 1)[-1]
            if stat.S_ISDIR(st_.st_mode):
                assert (e.flags, e.size, e.hash) == (FLAG_DIR, 4096, None)
            else:
                data = (CMS_MODELS / path[1:]).read_bytes()
                # CMS models are below the 4 MiB minimum: never chunked.
                assert e.flags == FLAG_FILE and e.size == len(data)
                assert e.hash == hashlib.sha1(zlib.compress(data, 6)).hexdigest()
                assert object_path(store, e.hash).is_file()
        assert [c.name for c in cat.listdir("/HLT")] == ["ParticleNetAK4", "ParticleNetAK8"]
    assert not (store / ".txn").exists()
    assert sorted(p.name for p in store.iterdir()) == [MANIFEST, "data"]


def test_catalog_keys_are_md5_of_paths(tmp_path: Path) -> None:
    import sqlite3

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"hello")
    store = tmp_path / "store"
    publish(src, store)
    m = read_manifest(store)
    assert m is not None
    db = tmp_path / "cat.db"
    db.write_bytes(zlib.decompress(object_path(store, m.catalog_hash, "C").read_bytes()))
    con = sqlite3.connect(db)
    rows = {
        r[4]: r
        for r in con.execute("SELECT md5path_1, md5path_2, parent_1, parent_2, name FROM catalog")
    }
    assert rows[""][:4] == (*md5path(""), 0, 0)
    assert rows["d"][:4] == (*md5path("/d"), *md5path(""))
    assert rows["f"][:4] == (*md5path("/d/f"), *md5path("/d"))
    # md5("") as two little-endian signed int64
    assert md5path("") == (
        int.from_bytes(bytes.fromhex("d41d8cd98f00b204"), "little", signed=True),
        int.from_bytes(bytes.fromhex("e9800998ecf8427e"), "little", signed=True),
    )


# ------------------------------------------------------------ new versions, dedup


def test_particlenet_versions_add_only_new_objects(tmp_path: Path) -> None:
    src = tmp_path / "src"
    ak4 = CMS_MODELS / "HLT" / "ParticleNetAK4"
    shutil.copytree(ak4 / "V00", src / "ParticleNetAK4" / "V00")
    store = tmp_path / "store"
    r1 = publish(src, store, SMALL)
    v00 = (ak4 / "V00" / "particle-net.onnx").read_bytes()
    v00_objs = {n: s for _, s, n in _names(v00, SMALL)}
    assert r1.objects_new == len(v00_objs) > 1
    stored_size = {p.name: p.stat().st_size for p in iter_objects(store)}
    assert r1.bytes_added == sum(
        stored_size[n[2:] + "P"] for n in v00_objs
    )  # every piece of a chunked file has suffix P

    shutil.copytree(ak4 / "V01", src / "ParticleNetAK4" / "V01")
    before = {p.name for p in iter_objects(store)}
    r2 = publish(src, store, SMALL)
    v01 = (ak4 / "V01" / "particle-net.onnx").read_bytes()
    v01_names = {n for _, _, n in _names(v01, SMALL)}
    fresh = v01_names - set(v00_objs)
    assert r2.revision == 2
    assert r2.objects_new == len(fresh)
    added = sum(
        len(zlib.compress(v01[o : o + s], 6)) for o, s, n in _names(v01, SMALL) if n in fresh
    )
    assert r2.bytes_added == added
    after = {p.name for p in iter_objects(store)}
    catalogs = {n for n in after - before if n.endswith("C")}
    assert len(catalogs) == 1
    assert after - before - catalogs == {n[2:] + "P" for n in fresh}


def test_shared_chunks_between_synthetic_files(tmp_path: Path) -> None:
    a = _rand(1, 3 << 20)
    b = a[: 1 << 20] + _rand(2, 300_000) + a[3 << 19 :]  # an insertion in the middle
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(a)
    store = tmp_path / "store"
    publish(src, store, SMALL)
    (src / "b.bin").write_bytes(b)
    r = publish(src, store, SMALL)
    a_names = {n for _, _, n in _names(a, SMALL)}
    b_pieces = _names(b, SMALL)
    fresh = [(o, s, n) for o, s, n in b_pieces if n not in a_names]
    # content-defined chunking resynchronises after the insertion: most chunks are shared
    assert 0 < len(fresh) < len(b_pieces) // 2
    assert r.objects_new == len(fresh)
    assert r.bytes_added == sum(len(zlib.compress(b[o : o + s], 6)) for o, s, _ in fresh)
    assert r.files == 2 and r.chunked_files == 2
    # publishing the same tree again adds nothing but a catalog
    r3 = publish(src, store, SMALL)
    assert (r3.revision, r3.objects_new, r3.bytes_added) == (3, 0, 0)


def test_identical_pieces_in_one_publish_are_stored_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = bytes(1 << 20)  # zeros: hard cuts at max, all chunks but the last identical
    for i in range(3):
        (src / f"z{i}").write_bytes(data)
    r = publish(
        src,
        tmp_path / "store",
        SMALL,
    )
    assert r.chunks == 3 * 4
    assert r.objects_new == r.objects_referenced == 1
    assert r.bytes_added == len(zlib.compress(bytes(256 * 1024), 6))


# ---------------------------------------------------------- entries and options


def test_symlink_inside_tree_is_a_symlink(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x" * 10)
    (src / "link").symlink_to("d/f")
    (src / "d" / "up").symlink_to("../link")
    (src / "empty").write_bytes(b"")
    store = tmp_path / "store"
    r = publish(src, store)
    assert (r.files, r.directories, r.symlinks) == (2, 2, 2)
    with open_store_catalog(store) as cat:
        link = cat.lookup("/link")
        assert link is not None
        assert (link.flags, link.symlink, link.hash, link.size) == (FLAG_LINK, "d/f", None, 3)
        assert stat.S_ISLNK(link.mode)
        up = cat.lookup("/d/up")
        assert up is not None and up.symlink == "../link"
        empty = cat.lookup("/empty")
        assert empty is not None
        assert empty.hash == hashlib.sha1(zlib.compress(b"", 6)).hexdigest()
        assert empty.size == 0


def test_compression_none(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = _rand(5, 600_000)
    (src / "f").write_bytes(data)
    store = tmp_path / "store"
    params = PublishParams(64 * 1024, 128 * 1024, 256 * 1024, compression="none")
    publish(src, store, params)
    with open_store_catalog(store) as cat:
        assert cat.properties()["compression"] == "none"
        e = cat.lookup("/f")
        assert e is not None and e.flags == FLAG_FILE | FLAG_CHUNKED | (1 << 11)
        chunks = cat.chunks("/f")
    assert [(c.offset, c.size, c.hash) for c in chunks] == _names(data, params)
    assert b"".join(object_path(store, c.hash, "P").read_bytes() for c in chunks) == data


def test_no_chunking_stores_large_file_whole(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = _rand(6, 600_000)
    (src / "f").write_bytes(data)
    store = tmp_path / "store"
    assert main(["sim", "publish", str(src), str(store), "--no-chunking", "--repo", "x.y"]) == 0
    with open_store_catalog(store) as cat:
        e = cat.lookup("/f")
        assert e is not None and e.flags == FLAG_FILE
        assert e.hash == hashlib.sha1(zlib.compress(data, 6)).hexdigest()
        assert cat.properties()["chunking"] == "0"
    m = read_manifest(store)
    assert m is not None and m.repository == "x.y"


def test_json_output(tmp_path: Path) -> None:
    import json

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"abc")
    out = tmp_path / "r.json"
    assert main(["sim", "publish", str(src), str(tmp_path / "s"), "--json", str(out)]) == 0
    j = json.loads(out.read_text())
    assert j["result"]["files"] == 1 and j["result"]["revision"] == 1
    assert j["result"]["added_bytes"] == len(zlib.compress(b"abc", 6))
    assert j["params"]["min_bytes"] == 4 << 20 and j["schema"]["version"] == 2
    assert set(j["result"]["stage_ns"]) >= {"read", "chunk", "compress", "hash", "write"}
    assert j["environment"]["kernel"] == os.uname().release


def test_bad_json_destination_is_refused_before_publishing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"abc")
    store = tmp_path / "s"
    missing = tmp_path / "no" / "r.json"
    for dest, message in (
        (src, f"cvmfs-modelio: {src}: is a directory\n"),
        (missing, f"cvmfs-modelio: {missing}: directory {missing.parent} does not exist\n"),
    ):
        assert main(["sim", "publish", str(src), str(store), "--json", str(dest)]) == 2
        assert capsys.readouterr().err == message
        assert not store.exists()


# ----------------------------------------------------------------- bad input


def _cli(tmp_path: Path, *args: str, capsys: Any) -> tuple[int, str]:
    rc = main(["sim", "publish", *args])
    err: str = capsys.readouterr().err
    return rc, err


@pytest.fixture
def populated(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A source tree already published once, and the store's snapshot."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_bytes(_rand(3, 1000))
    store = tmp_path / "store"
    publish(src, store)
    (src / "new").write_bytes(_rand(4, 1000))  # would add an object if publishing went ahead
    return src, store, _snapshot(store)


def _assert_refused(
    src: Path, store: Path, snap: dict[str, str], capsys: Any, needle: str, culprit: Path
) -> None:
    rc = main(["sim", "publish", str(src), str(store)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"cvmfs-modelio: {culprit}: ")
    assert needle in err
    assert _snapshot(store) == snap


def test_refuses_symlink_leaving_tree(
    populated: tuple[Path, Path, dict[str, str]], tmp_path: Path, capsys: Any
) -> None:
    src, store, snap = populated
    (tmp_path / "outside").write_bytes(b"secret")
    bad = src / "escape"
    bad.symlink_to("../outside")
    _assert_refused(src, store, snap, capsys, "symlink target '../outside' leaves", bad)
    bad.unlink()
    bad.symlink_to(src / "ok")  # absolute: would point off the repository on a mount
    _assert_refused(src, store, snap, capsys, "leaves the source tree", bad)
    bad.unlink()
    (src / "d").mkdir()
    bad = src / "d" / "sneaky"
    bad.symlink_to("../../src/../outside")
    _assert_refused(src, store, snap, capsys, "leaves the source tree", bad)


def test_refuses_fifo_and_socket(populated: tuple[Path, Path, dict[str, str]], capsys: Any) -> None:
    src, store, snap = populated
    fifo = src / "fifo"
    os.mkfifo(fifo)
    _assert_refused(src, store, snap, capsys, "FIFO cannot be published (special file)", fifo)
    fifo.unlink()
    sock_path = src / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(sock_path))
        _assert_refused(src, store, snap, capsys, "socket cannot be published", sock_path)


def test_refuses_device(populated: tuple[Path, Path, dict[str, str]], capsys: Any) -> None:
    src, store, snap = populated
    dev = src / "null"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod not permitted here")
    _assert_refused(src, store, snap, capsys, "character device cannot be published", dev)


def test_refuses_into_new_store_leaves_nothing(tmp_path: Path, capsys: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    os.mkfifo(src / "b")
    store = tmp_path / "store"
    rc = main(["sim", "publish", str(src), str(store)])
    assert rc == 2 and "FIFO" in capsys.readouterr().err
    assert not store.exists()


def _publish_as_nobody(src: Path, store: Path) -> str:
    """Run publish() in a forked child that has switched to ``nobody``; its error message."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                publish(src, store)
            except UsageError as e:
                os.write(w, str(e).encode())
                code = 2
        except BaseException as e:
            os.write(w, f"unexpected {type(e).__name__}: {e}".encode())
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, msg
    return msg


def test_refuses_unreadable_file_and_directory() -> None:
    """Root reads everything, so the unreadable cases run publish() as ``nobody``."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    base = Path(tempfile.mkdtemp(prefix="cmio-unreadable-"))
    try:
        base.chmod(0o755)
        src = base / "src"
        src.mkdir()
        (src / "ok").write_bytes(b"fine")
        secret = src / "secret"
        secret.write_bytes(b"no")
        secret.chmod(0o000)
        store = base / "store"
        store.mkdir()
        store.chmod(0o777)
        assert _publish_as_nobody(src, store) == f"{secret}: cannot read file: Permission denied"
        assert list(store.iterdir()) == []
        secret.chmod(0o644)
        (src / "hidden").mkdir()
        (src / "hidden").chmod(0o700)
        assert _publish_as_nobody(src, store) == (
            f"{src / 'hidden'}: cannot list directory: Permission denied"
        )
        assert list(store.iterdir()) == []
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min", "64", "--avg", "64", "--max", "128"], "need 32 <= min < avg < max"),
        (["--min", "16", "--avg", "64", "--max", "128"], "need 32 <= min < avg < max"),
        (["--min", "4x"], "--min: cannot parse size '4x'"),
        (["--no-chunking", "--max", "1M"], "--no-chunking cannot be combined"),
        (["--repo", "a/b"], "--repo: 'a/b' is not a valid repository name"),
    ],
)
def test_bad_options(tmp_path: Path, capsys: Any, args: list[str], message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rc = main(["sim", "publish", str(src), str(tmp_path / "store"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "store").exists()


def test_bad_stores(tmp_path: Path, capsys: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_bytes(b"")
    cases = [
        (str(tmp_path / "file"), "exists and is not a directory"),
        (str(tmp_path / "junk"), "not empty and not a store"),
        (str(src / "inner"), "overlap"),
        (str(tmp_path), "overlap"),
    ]
    for store, message in cases:
        rc = main(["sim", "publish", str(src), store])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, err
    rc = main(["sim", "publish", str(tmp_path / "missing"), str(tmp_path / "s")])
    assert rc == 2 and "missing: no such file or directory" in capsys.readouterr().err
    with pytest.raises(UsageError, match="no published revision"), open_store_catalog(src):
        pass


# ----------------------------------------------------------------- manifest


def test_manifest_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    store = tmp_path / "store"
    publish(src, store)
    raw = (store / MANIFEST).read_bytes()
    m = parse_manifest(raw)
    assert m.to_bytes() == raw
    with pytest.raises(UsageError, match="checksum"):
        parse_manifest(raw.replace(b"S1", b"S2"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_manifest_parser_hostile_input(data: bytes) -> None:
    try:
        parse_manifest(data, "m")
    except UsageError as e:
        assert str(e).startswith("m: ")


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from("CBSNDT"),
        st.text(alphabet="0123456789abcdefxyz-", max_size=45),
        max_size=6,
    )
)
def test_manifest_parser_field_soup(fields: dict[str, str]) -> None:
    body = "".join(f"{k}{v}\n" for k, v in fields.items()).encode()
    data = body + b"--\n" + hashlib.sha1(body).hexdigest().encode() + b"\n"
    try:
        m = parse_manifest(data, "m")
    except UsageError as e:
        assert str(e).startswith("m: ")
    else:
        assert m.catalog_hash == fields["C"] and m.revision == int(fields["S"])


def test_large_pieces_spill_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces above SPILL stream through a temp file (bounded memory); result identical."""
    from cvmfs_modelio.sim import publish as publish_mod

    monkeypatch.setattr(publish_mod, "SPILL", 100_000)
    src = tmp_path / "src"
    src.mkdir()
    data = _rand(8, 1_000_000)
    (src / "a").write_bytes(data)
    (src / "b").write_bytes(data)  # same content: one object, counted once
    store = tmp_path / "store"
    for comp in ("zlib", "none"):
        r = publish(src, store, PublishParams(chunking=False, compression=comp))
        stored = zlib.compress(data, 6) if comp == "zlib" else data
        name = hashlib.sha1(stored).hexdigest()
        assert object_path(store, name).read_bytes() == stored
        assert (r.objects_new, r.bytes_added) == (1, len(stored))
    assert not (store / ".txn").exists()


def test_refuses_non_utf8_names_and_accepts_odd_ones(tmp_path: Path, capsys: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    odd = "sp ace,\nnew-line ü"
    (src / odd).write_bytes(b"1")
    store = tmp_path / "store"
    publish(src, store)
    with open_store_catalog(store) as cat:
        e = cat.lookup("/" + odd)
        assert e is not None and e.name == odd
    snap = _snapshot(store)
    bad = os.fsencode(src) + b"/\xff.bin"
    with open(bad, "wb") as f:
        f.write(b"2")
    rc = main(["sim", "publish", str(src), str(store)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "file name is not valid UTF-8" in err
    assert _snapshot(store) == snap


def _read_back(store: Path, cat: Catalog, path: str) -> bytes:
    """A file's content rebuilt from the store alone (catalog + objects)."""
    e = cat.lookup(path)
    assert e is not None
    comp = cat.properties()["compression"]
    pieces = [(c.hash, "P") for c in cat.chunks(path)] if e.is_chunked else [(e.hash, "")]
    out = b""
    for h, suffix in pieces:
        assert h is not None
        raw = object_path(store, h, suffix).read_bytes()
        out += zlib.decompress(raw) if comp == "zlib" else raw
    return out


@settings(max_examples=15, deadline=None)
@given(
    files=st.lists(
        st.tuples(st.integers(0, 6000), st.integers(0, 3), st.booleans()), min_size=1, max_size=5
    ),
    compression=st.sampled_from(["zlib", "none"]),
)
def test_property_every_file_reads_back(
    files: list[tuple[int, int, bool]], compression: str
) -> None:
    """Random trees (random, repetitive and zero content) round-trip through the store."""
    params = PublishParams(256, 512, 1024, compression=compression)
    with tempfile.TemporaryDirectory() as d:
        src, store = Path(d) / "src", Path(d) / "store"
        src.mkdir()
        contents = {}
        for i, (size, seed, zeros) in enumerate(files):
            data = bytes(size) if zeros else _rand(seed, size)
            (src / f"f{i}").write_bytes(data)
            contents[f"/f{i}"] = data
        r = publish(src, store, params)
        assert r.files == len(files) and r.bytes_in == sum(map(len, contents.values()))
        # every piece of every chunked file is between min and max, the last may be shorter
        with open_store_catalog(store) as cat:
            for path, data in contents.items():
                assert _read_back(store, cat, path) == data
                chunks = cat.chunks(path)
                expected = _names(data, params)
                if len(expected) > 1:
                    assert [(c.offset, c.size, c.hash) for c in chunks] == expected
                else:
                    assert chunks == []
                assert all(256 <= c.size <= 1024 for c in chunks[:-1])


def test_failure_mid_run_removes_the_objects_it_added(
    populated: tuple[Path, Path, dict[str, str]],
) -> None:
    """A file that shrinks after the scan fails the run; the store is left as it was."""
    src, store, snap = populated
    for i in range(10):
        (src / f"b{i}").write_bytes(_rand(100 + i, 5000))
    victim = src / "z"
    victim.write_bytes(_rand(99, 1000))
    seen: list[str] = []

    def shrink_victim(path: str) -> None:
        if not seen:
            with open(victim, "r+b") as f:
                f.truncate(10)
        seen.append(path)

    with pytest.raises(UsageError) as ei:
        publish(src, store, progress=shrink_victim)
    assert str(ei.value) == f"{victim}: file shrank while publishing (at byte 10)"
    assert len(seen) >= 1  # some files were registered (their objects written) before
    assert _snapshot(store) == snap


def test_source_root_may_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"data")
    (real / "l").symlink_to("f")
    (tmp_path / "alias").symlink_to("real")
    store = tmp_path / "store"
    r = publish(tmp_path / "alias", store)
    assert (r.files, r.directories, r.symlinks) == (1, 1, 1)
    with open_store_catalog(store) as cat:
        root = cat.lookup("")
        assert root is not None and root.is_dir
        link = cat.lookup("/l")
        assert link is not None and link.symlink == "f"


def test_one_publish_at_a_time(populated: tuple[Path, Path, dict[str, str]]) -> None:
    import fcntl

    src, store, snap = populated
    fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a concurrent publisher holds it
        with pytest.raises(UsageError, match="another publish into this store is running"):
            publish(src, store)
    finally:
        os.close(fd)
    assert _snapshot(store) == snap
    assert publish(src, store).revision == 2
