"""Helpers for the emulated-client tests: publish trees, merge stores, serve them, read logs."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cvmfs_modelio.events import Op, Source, read_event_file
from cvmfs_modelio.sim.publish import PublishParams, publish
from cvmfs_modelio.sim.store import MANIFEST, Manifest, object_path, read_manifest, write_atomic

from .conftest import CHUNK_VECTORS, load_vector, vector_content

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
        import pytest

        pytest.skip(f"{path.name}: content needs a package that is not installed")
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
def served(store: Path, **kw: Any) -> Iterator[Any]:
    """The store over HTTP on an ephemeral loopback port (``sim serve``'s builtin server)."""
    try:
        from cvmfs_modelio.sim.serve import serve
    except ImportError:  # TEMPORARY until simstore's serve lands
        yield from _fallback(store)
        return
    with serve(store, port=0, **kw) as srv:
        yield srv


def _fallback(store: Path) -> Iterator[Any]:
    import functools
    import http.server
    import threading

    import numpy as np

    from cvmfs_modelio.events import EventLog, FileEntry, empty_events

    rows: list[tuple[str, int]] = []

    class H(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def send_head(self):  # type: ignore[no-untyped-def]
            rows.append((self.path, time.monotonic_ns()))
            return super().send_head()

    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(H, directory=str(store))
    )
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    class S:
        url = f"http://127.0.0.1:{srv.server_address[1]}"

        def requests(self) -> EventLog:
            ev = empty_events(len(rows))
            files = {}
            for i, (path, t) in enumerate(rows):
                ev["t_start_ns"][i] = t
                ev["file_id"][i] = i
                files[i] = FileEntry(i, path, 0)
            return EventLog(ev, files)

    try:
        yield S()
    finally:
        srv.shutdown()


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
