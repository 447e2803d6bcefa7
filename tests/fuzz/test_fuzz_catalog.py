"""Fuzz target: the emulated client's catalog reader (cmio-simfs), through a real FUSE mount.

A small published store is the base; each case applies hostile edits to its SQLite catalog
(entries named ``a/b``, ``..``, ``.``, ``""``, with a NUL or over NAME_MAX; duplicate keys
and duplicate names; sizes that disagree with the chunk rows or the object; chunk rows
shifted, overlapping, missing or overflowing; parent cycles and orphans; no root or two;
bad hashes; a directory flagged as a file), republishes it (new catalog object, manifest)
and mounts.  Each case: the mount is refused with one line naming the catalog and the
problem, or it mounts, and a walk in a separate process (bounded in time: a hang fails)
reads every file: each read is EIO or verified bytes, a prefix of the file's real content
(all of it when the catalog's size is right); no name with a '/' or NUL is listed; the
client is still alive afterwards and unmounts.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.mount import MountOptions, SimMount
from cvmfs_modelio.sim.publish import PublishParams, publish
from cvmfs_modelio.sim.store import MANIFEST, Manifest, md5path, object_path, read_manifest
from tests.conftest import require_root_fuse
from tests.fuzz._budget import fuzz
from tests.sim.simfs_support import ChildServer, served

pytestmark = pytest.mark.fuse

FILES = {
    "a.bin": 3000,
    "dir/b.bin": 150_000,  # chunked (16/32/64 KiB)
    "dir/sub/c.txt": 10,
    "empty": 0,
}
DIRS = ["", "dir", "dir/sub"]


class Base:
    """The served store (its catalog is replaced per case), its original catalog database
    and the real content of every file.  A plain class: hypothesis prints it short."""

    def __init__(
        self, store: Path, db: bytes, content: dict[str, bytes], server: ChildServer
    ) -> None:
        self.store, self.db, self.content, self.server = store, db, content, server

    def __repr__(self) -> str:
        return f"Base({self.store})"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    require_root_fuse()
    work = tmp_path_factory.mktemp("fuzzcat")
    src = work / "src"
    rng = np.random.Generator(np.random.PCG64(7))
    content = {}
    for rel, n in FILES.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        content[rel] = rng.bytes(n)
        p.write_bytes(content[rel])
    store = work / "store"
    publish(src, store, PublishParams(16384, 32768, 65536))
    m = read_manifest(store)
    assert m is not None
    db = zlib.decompress(object_path(store, m.catalog_hash, "C").read_bytes())
    with served(store) as srv:
        yield Base(store, db, content, srv)
    shutil.rmtree(work)


# ---------------------------------------------------------------- hostile edits

HOSTILE_NAMES = ["a/b", "..", ".", "", "x\x00y", "n" * 300, "ok", "é€", "\n"]


@st.composite
def edits(draw: st.DrawFn) -> list[tuple[str, tuple[object, ...]]]:
    """A few edits, each (kind, arguments); applied in order by ``apply``."""
    files = st.sampled_from(list(FILES))
    dirs = st.sampled_from(DIRS)
    one = st.one_of(
        st.tuples(st.just("clone"), st.tuples(files, dirs, st.sampled_from(HOSTILE_NAMES))),
        st.tuples(st.just("dup-key"), st.tuples(files)),
        st.tuples(st.just("dup-name"), st.tuples(files)),
        st.tuples(
            st.just("size"),
            st.tuples(files, st.sampled_from([-1, 1, -4096, 4096, -(1 << 40), 1 << 62])),
        ),
        st.tuples(
            st.just("chunk"),
            st.tuples(
                st.sampled_from(["shift", "grow", "shrink", "drop", "dup", "huge", "zero", "neg"]),
                st.integers(0, 8),
            ),
        ),
        st.tuples(st.just("cycle"), st.tuples(st.sampled_from(["self", "child"]))),
        st.tuples(st.just("orphan"), st.tuples(files | st.sampled_from(DIRS[1:]))),
        st.tuples(st.just("root"), st.tuples(st.sampled_from(["drop", "second", "file"]))),
        st.tuples(st.just("hash"), st.tuples(files, st.sampled_from(["short", "text", "null"]))),
        st.tuples(
            st.just("flags"), st.tuples(st.sampled_from(DIRS[1:]), st.sampled_from([4, 0, 8]))
        ),
    )
    whole = st.sampled_from(["a.bin", "dir/sub/c.txt", "empty"])
    loadable = st.one_of(
        st.tuples(
            st.just("size"), st.tuples(whole, st.sampled_from([-1, 1, -4096, 4096, 1 << 40]))
        ),
        st.tuples(
            st.just("clone"), st.tuples(files, dirs, st.sampled_from(["ok", "é€", "\n", "x" * 255]))
        ),
        st.tuples(st.just("swap"), st.tuples(whole, files)),
        st.tuples(st.just("chunk-swap"), st.tuples(st.integers(0, 8), st.integers(0, 8))),
    )
    plan: list[tuple[str, tuple[object, ...]]] = draw(
        st.lists(loadable, min_size=1, max_size=3) | st.lists(one, min_size=1, max_size=3)  # type: ignore[arg-type]
    )
    return plan


def apply(db: sqlite3.Connection, kind: str, args: tuple[object, ...]) -> None:
    def key(path: str) -> tuple[int, int]:
        return md5path("" if path == "" else "/" + path)

    if kind in ("clone", "dup-key", "dup-name"):
        src = str(args[0])
        row = list(
            db.execute(
                "SELECT * FROM catalog WHERE md5path_1=? AND md5path_2=?", key(src)
            ).fetchone()
            or []
        )
        if not row:
            return
        if kind == "clone":
            new_key = md5path(f"/clone/{src}/{args[1]}/{args[2]!r}")
            row[0:2] = new_key
            row[2:4] = key(str(args[1]))
            row[10] = str(args[2])
        elif kind == "dup-name":
            row[0:2] = md5path("/dup/" + src)
        db.execute(f"INSERT INTO catalog VALUES ({','.join('?' * len(row))})", row)
        if kind == "clone" or kind == "dup-name":
            chunks = db.execute(
                "SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=?", key(src)
            ).fetchall()
            db.executemany(
                "INSERT INTO chunks VALUES (?,?,?,?,?)", [(*row[0:2], *c) for c in chunks]
            )
    elif kind == "swap":  # the object of another file (its size disagrees)
        db.execute(
            "UPDATE catalog SET hash=(SELECT hash FROM chunks UNION ALL SELECT hash FROM catalog "
            "WHERE md5path_1=? AND md5path_2=? AND hash IS NOT NULL LIMIT 1) "
            "WHERE md5path_1=? AND md5path_2=?",
            (*key(str(args[1])), *key(str(args[0]))),
        )
    elif kind == "chunk-swap":  # two chunk rows name each other's objects
        rows = db.execute("SELECT rowid, hash FROM chunks ORDER BY offset").fetchall()
        (r1, h1), (r2, h2) = (
            rows[int(str(args[0])) % len(rows)],
            rows[int(str(args[1])) % len(rows)],
        )
        db.execute("UPDATE chunks SET hash=? WHERE rowid=?", (h2, r1))
        db.execute("UPDATE chunks SET hash=? WHERE rowid=?", (h1, r2))
    elif kind == "size":
        db.execute(
            "UPDATE catalog SET size = max(-(1<<62), size + ?) WHERE md5path_1=? AND md5path_2=?",
            (args[1], *key(str(args[0]))),
        )
    elif kind == "chunk":
        what, i = str(args[0]), int(str(args[1]))
        rows = db.execute("SELECT rowid, offset, size FROM chunks ORDER BY offset").fetchall()
        if not rows:
            return
        rowid = rows[i % len(rows)][0]
        change = {
            "shift": "offset = offset + 1",
            "grow": "size = size + 1",
            "shrink": "size = size - 1",
            "huge": "size = 9223372036854775000",
            "zero": "size = 0",
            "neg": "offset = -1",
        }
        if what == "drop":
            db.execute("DELETE FROM chunks WHERE rowid=?", (rowid,))
        elif what == "dup":
            db.execute(
                "INSERT INTO chunks SELECT md5path_1, md5path_2, offset, size + 7, hash "
                "FROM chunks WHERE rowid=?",
                (rowid,),
            )
        else:
            db.execute(f"UPDATE chunks SET {change[what]} WHERE rowid=?", (rowid,))
    elif kind == "cycle":
        if args[0] == "self":
            db.execute(
                "UPDATE catalog SET parent_1=md5path_1, parent_2=md5path_2 "
                "WHERE md5path_1=? AND md5path_2=?",
                key("dir"),
            )
        else:
            db.execute(
                "UPDATE catalog SET parent_1=?, parent_2=? WHERE md5path_1=? AND md5path_2=?",
                (*key("dir/sub"), *key("dir")),
            )
    elif kind == "orphan":
        db.execute(
            "UPDATE catalog SET parent_1=12345, parent_2=678 WHERE md5path_1=? AND md5path_2=?",
            key(str(args[0])),
        )
    elif kind == "root":
        if args[0] == "drop":
            db.execute("DELETE FROM catalog WHERE parent_1=0 AND parent_2=0 AND name=''")
        elif args[0] == "second":
            db.execute(
                "INSERT INTO catalog SELECT 99, 99, parent_1, parent_2, hardlinks, hash, size, "
                "mode, mtime, flags, name, symlink, uid, gid, xattr FROM catalog "
                "WHERE parent_1=0 AND parent_2=0"
            )
        else:
            db.execute("UPDATE catalog SET flags=4 WHERE parent_1=0 AND parent_2=0")
    elif kind == "hash":
        value = {"short": b"\x01" * 19, "text": "0" * 40, "null": None}[str(args[1])]
        db.execute(
            "UPDATE catalog SET hash=? WHERE md5path_1=? AND md5path_2=?",
            (value, *key(str(args[0]))),
        )
    elif kind == "flags":
        db.execute(
            "UPDATE catalog SET flags=? WHERE md5path_1=? AND md5path_2=?",
            (args[1], *key(str(args[0]))),
        )


def republish(b: Base, db_bytes: bytes) -> None:
    stored = zlib.compress(db_bytes, 6)
    chash = hashlib.sha1(stored).hexdigest()
    obj = object_path(b.store, chash, "C")
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(stored)
    old = read_manifest(b.store)
    assert old is not None
    m = Manifest(chash, len(stored), old.revision + 1, old.repository, published_s=int(time.time()))
    tmp = b.store / (MANIFEST + ".tmp")
    tmp.write_bytes(m.to_bytes())
    tmp.replace(b.store / MANIFEST)


def objects(db: sqlite3.Connection, content: dict[str, bytes]) -> dict[bytes, bytes]:
    """Object hash -> its bytes, from the original catalog and the real files."""
    out: dict[bytes, bytes] = {}
    for rel, data in content.items():
        k = md5path("/" + rel)
        row = db.execute("SELECT hash FROM catalog WHERE md5path_1=? AND md5path_2=?", k).fetchone()
        if row and row[0] is not None:
            out[bytes(row[0])] = data
        for off, size, h in db.execute(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=?", k
        ):
            out[bytes(h)] = data[off : off + size]
    return out


def expected(db: sqlite3.Connection, objs: dict[bytes, bytes]) -> dict[str, bytes | None]:
    """Mount path -> the bytes the (edited) catalog names for it (None: an unknown object)."""
    rows = db.execute(
        "SELECT md5path_1, md5path_2, parent_1, parent_2, name, hash FROM catalog"
    ).fetchall()
    by_key = {(r[0], r[1]): r for r in rows}

    def path(k: tuple[int, int]) -> str:
        r = by_key[k]
        if (r[2], r[3]) == (0, 0):
            return ""
        up = path((r[2], r[3]))
        return f"{up}/{r[4]}" if up else str(r[4])

    out: dict[str, bytes | None] = {}
    for r in rows:
        if (r[2], r[3]) == (0, 0):
            continue
        chunks = db.execute(
            "SELECT hash FROM chunks WHERE md5path_1=? AND md5path_2=? ORDER BY offset",
            (r[0], r[1]),
        ).fetchall()
        hashes = [h for (h,) in chunks] if chunks else [r[5]]
        # a hash that is not a blob names no object the store has
        parts = [objs.get(h) if isinstance(h, bytes) else None for h in hashes]
        out[path((r[0], r[1]))] = None if None in parts else b"".join(p or b"" for p in parts)
    return out


WALKER = r"""
import json, os, sys
out = {}
for top, dirs, files in os.walk(sys.argv[1]):
    for n in dirs + files:
        p = os.path.join(top, n)
        rel = os.path.relpath(p, sys.argv[1])
        try:
            st = os.lstat(p)
        except OSError as e:
            out[rel] = ["stat-error", e.errno]
            continue
        if n in files and os.path.isfile(p) and not os.path.islink(p):
            try:
                with open(p, "rb") as f:
                    data = f.read()
                out[rel] = ["data", st.st_size, data.hex()]
            except OSError as e:
                out[rel] = ["read-error", st.st_size, e.errno]
        else:
            out[rel] = ["other", st.st_mode]
print(json.dumps(out))
"""


@fuzz(25)
@given(edits())
def test_fuzz_catalog_through_a_mount(
    base: Base, tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[str, tuple[object, ...]]]
) -> None:
    work = tmp_path_factory.mktemp("case")
    dbfile = work / "catalog.sqlite"
    dbfile.write_bytes(base.db)
    con = sqlite3.connect(dbfile)
    # drop the primary keys so that duplicate rows can exist, as in a hand-made catalog
    con.executescript(
        "CREATE TABLE c2 AS SELECT * FROM catalog; DROP TABLE catalog;"
        "ALTER TABLE c2 RENAME TO catalog;"
        "CREATE TABLE k2 AS SELECT * FROM chunks; DROP TABLE chunks;"
        "ALTER TABLE k2 RENAME TO chunks;"
    )
    objs = objects(con, base.content)
    for kind, args in plan:
        apply(con, kind, args)
    con.commit()
    try:
        want = expected(con, objs)
    except (KeyError, RecursionError):
        want = {}  # no tree: the mount must be refused
    con.close()
    republish(base, dbfile.read_bytes())
    opts = MountOptions(cache=work / "cache", timeout_s=2, timeout_direct_s=2, retries=0)
    (work / "mnt").mkdir()
    m = SimMount(base.server.url, work / "mnt", opts)
    try:
        m.start()
    except UsageError as e:
        msg = str(e)
        assert "\n" not in msg.strip(), msg
        # one line naming the catalog object (its cached copy) and what is wrong with it
        event("refused: " + msg.split("C: ", 1)[-1][:40])
        assert re.search(r"mount failed: /\S+/[0-9a-f]{2}/[0-9a-f]{38}C: \S", msg), msg
        return
    try:
        r = subprocess.run(
            [sys.executable, "-c", WALKER, str(m.path)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        seen = json.loads(r.stdout)
        assert m.proc is not None and m.proc.poll() is None, "the client died during the walk"
    finally:
        m.stop()
    event("mounted")
    assert want, "a catalog without a tree was mounted"
    for rel, res in seen.items():
        assert "\0" not in rel and rel in want, rel
        if res[0] == "other":
            continue
        exp = want[rel]
        if exp is None:
            assert res[0] == "read-error", f"{rel}: bytes of an object the store does not have"
            continue
        if res[0] == "data":
            size, data = res[1], bytes.fromhex(res[2])
            assert exp.startswith(data), f"{rel}: {len(data)} bytes that are not the object's"
            if size == len(exp):
                assert data == exp, f"{rel}: {len(data)} of {len(exp)} bytes"
