"""Helpers for the emulated-client tests: publish trees, merge stores, serve them, read logs."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import shutil
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.events import EventLog, Op, Source, read_event_file
from cvmfs_modelio.sim.publish import PublishParams, publish
from cvmfs_modelio.sim.store import MANIFEST, Manifest, object_path, read_manifest, write_atomic
from tests.conftest import CHUNK_VECTORS, load_vector, vector_content

MiB = 1 << 20
P1 = PublishParams(4 * MiB, 8 * MiB, 16 * MiB)
P2 = PublishParams(1 * MiB, 2 * MiB, 4 * MiB)
P5 = PublishParams(16384, 32768, 65536)


def vector_file(prefix: str, stem: str) -> tuple[dict[str, Any], bytes]:
    """The chunk test vector ``<prefix>_*__<stem>.json`` and its recreated bytes."""
    (path,) = sorted(CHUNK_VECTORS.glob(f"{prefix}_*__{stem}.json"))
    vec = load_vector(path)
    data = vector_content(vec)
    if data is None:
        from tests.conftest import missing

        missing(f"{path.name}: content needs ../shared/models/minilm/ beside the checkout")
    assert len(data) == vec["size"]
    assert hashlib.sha256(data).hexdigest() == vec["sha256"]
    return vec, data


def merge_stores(dest: Path, *sources: Path) -> None:
    """Union of several published stores into ``dest`` (objects + one catalog + manifest).

    Real repositories publish subtrees with different chunk parameters in turn; ``sim
    publish`` chunks a whole tree with one set, so the tests publish each subtree into its
    own store and merge: the catalogs' rows are keyed by full paths, so a union is exact.
    """
    dest.mkdir(parents=True)
    db = dest / "merged.sqlite"
    con = sqlite3.connect(db)
    first = True
    for src in sources:
        m = read_manifest(src)
        assert m is not None
        raw = zlib.decompress(object_path(src, m.catalog_hash, "C").read_bytes())
        part = dest / "part.sqlite"
        part.write_bytes(raw)
        if first:
            con.close()
            shutil.copy(part, db)
            con = sqlite3.connect(db)
            first = False
        else:
            con.execute("ATTACH DATABASE ? AS p", (str(part),))
            con.execute("INSERT OR IGNORE INTO catalog SELECT * FROM p.catalog")
            con.execute("INSERT OR IGNORE INTO chunks SELECT * FROM p.chunks")
            con.commit()
            con.execute("DETACH DATABASE p")
        part.unlink()
        for obj in (src / "data").rglob("*"):
            if obj.is_file() and not obj.name.endswith("C"):
                target = dest / obj.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.link(obj, target)
    con.commit()
    con.close()
    stored = zlib.compress(db.read_bytes(), 6)
    db.unlink()
    chash = hashlib.sha1(stored).hexdigest()
    cobj = object_path(dest, chash, "C")
    cobj.parent.mkdir(parents=True, exist_ok=True)
    cobj.write_bytes(stored)
    manifest = Manifest(chash, len(stored), 1, "sim.cvmfs.io", published_s=int(time.time()))
    write_atomic(dest / MANIFEST, manifest.to_bytes())


def publish_tree(files: dict[str, bytes], root: Path, store: Path, params: PublishParams) -> Path:
    """Write ``files`` (relative path -> bytes) under ``root`` and publish it into ``store``."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    publish(root, store, params)
    return store


@contextmanager
def served(store: Path, **kw: Any) -> Iterator[ChildServer]:
    """``sim serve``'s stack for ``store`` on an ephemeral loopback port, in a child process.

    Out of process on purpose: a test that reads the mount through mmap (or any call
    that holds the GIL while the kernel waits for the FUSE client) would otherwise stall
    an in-process server, which needs the GIL to answer.
    """
    srv = ChildServer(store, kw)
    try:
        yield srv
    finally:
        srv.close()


class ChildServer:
    """A ServerStack running in a spawned process, driven over a pipe."""

    def __init__(self, store: Path, kw: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_server_child, args=(child, str(store), kw), daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(60):
            self.close()
            raise RuntimeError("server did not start")
        status, a, b = self._conn.recv()
        if status != "ok":
            self.close()
            raise RuntimeError(f"server failed: {a}")
        self.url: str = a
        self.proxy: str | None = b

    def _call(self, *msg: Any) -> Any:
        self._conn.send(msg)
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def requests(self, min_count: int = 0) -> EventLog:
        log: EventLog = self._call("requests", min_count)
        return log

    def proxy_requests(self, min_count: int = 0) -> EventLog:
        log: EventLog = self._call("proxy_requests", min_count)
        return log

    def set_faults(self, rules: list[Any]) -> None:
        self._call("set_faults", rules)

    def faults_fired(self) -> list[int]:
        fired: list[int] = self._call("faults_fired")
        return fired

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(("stop",))
            self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()


def _server_child(conn: Any, store: str, kw: dict[str, Any]) -> None:
    from cvmfs_modelio.sim.server import serve

    try:
        stack = serve(store, port=0, **kw).start()
    except BaseException as e:
        conn.send(("err", f"{type(e).__name__}: {e}", None))
        return
    try:
        conn.send(("ok", stack.url, stack.proxy))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            try:
                if msg[0] == "requests":
                    value: Any = stack.requests(msg[1])
                elif msg[0] == "proxy_requests":
                    value = stack.proxy_requests(msg[1])
                elif msg[0] == "set_faults":
                    value = stack.set_faults(msg[1])
                elif msg[0] == "faults_fired":
                    value = stack.faults_fired()
                else:
                    raise ValueError(f"unknown request {msg[0]!r}")
                conn.send(("ok", value))
            except Exception as e:
                conn.send(("err", f"{type(e).__name__}: {e}"))
    finally:
        stack.close()


def fetches(log_path: Path, t0: int = 0, t1: int = 1 << 62) -> list[tuple[str, int, int]]:
    """(object path, bytes on the wire, result) of the client's fetches in [t0, t1), in order."""
    log = read_event_file(log_path)
    ev = log.events
    sel = ev[(ev["source"] == Source.FETCH) & (ev["op"] == Op.FETCH)]
    sel = sel[(sel["t_start_ns"] >= t0) & (sel["t_start_ns"] < t1)]
    sel = sel[sel["t_start_ns"].argsort(kind="stable")]
    return [(log.files[int(e["file_id"])].path, int(e["length"]), int(e["result"])) for e in sel]


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}
