"""The emulated store's file catalog: SQLite, schema ``cmio-1`` (docs/store-format.md)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.store import (
    FLAG_CHUNKED,
    FLAG_DIR,
    FLAG_LINK,
    SUFFIX_CATALOG,
    md5path,
    object_path,
    parent_path,
    read_manifest,
)

SCHEMA = "cmio-1"

_DDL = """
CREATE TABLE properties (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE catalog (
  md5path_1 INTEGER, md5path_2 INTEGER,
  parent_1 INTEGER, parent_2 INTEGER,
  hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, mtime INTEGER, flags INTEGER,
  name TEXT, symlink TEXT, uid INTEGER, gid INTEGER, xattr BLOB,
  PRIMARY KEY (md5path_1, md5path_2));
CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2);
CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, size INTEGER, hash BLOB,
  PRIMARY KEY (md5path_1, md5path_2, offset, size));
"""


@dataclass(frozen=True)
class Chunk:
    """One stored chunk of a file: byte range in the file and the stored object's SHA-1 (hex)."""

    offset: int
    size: int
    hash: str


@dataclass(frozen=True)
class Entry:
    """One catalog row.  ``hash`` is hex (None for directories, symlinks, chunked files)."""

    path: str
    name: str
    mode: int
    size: int
    mtime: int
    flags: int
    hash: str | None
    symlink: str | None
    uid: int
    gid: int

    @property
    def is_dir(self) -> bool:
        return bool(self.flags & FLAG_DIR)

    @property
    def is_symlink(self) -> bool:
        return bool(self.flags & FLAG_LINK)

    @property
    def is_chunked(self) -> bool:
        return bool(self.flags & FLAG_CHUNKED)


class CatalogWriter:
    """Builds a catalog database file row by row (one transaction, committed by ``close``)."""

    def __init__(self, path: Path, properties: dict[str, str]) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_DDL)
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO properties VALUES (?, ?)",
            [("schema", SCHEMA), *sorted(properties.items())],
        )

    def add(self, entry: Entry, chunks: list[Chunk] | None = None) -> None:
        """Insert ``entry`` (and its chunk rows, for a chunked file)."""
        key = md5path(entry.path)
        parent = parent_path(entry.path)
        pkey = md5path(parent) if parent is not None else (0, 0)
        self._db.execute(
            "INSERT INTO catalog VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                *key,
                *pkey,
                1,
                bytes.fromhex(entry.hash) if entry.hash is not None else None,
                entry.size,
                entry.mode,
                entry.mtime,
                entry.flags,
                entry.name,
                entry.symlink,
                entry.uid,
                entry.gid,
                None,
            ),
        )
        if chunks:
            self._db.executemany(
                "INSERT INTO chunks VALUES (?,?,?,?,?)",
                [(*key, c.offset, c.size, bytes.fromhex(c.hash)) for c in chunks],
            )

    def close(self) -> None:
        """Commit and close the database file."""
        self._db.execute("COMMIT")
        self._db.close()

    def abort(self) -> None:
        self._db.close()


class Catalog:
    """Read access to a catalog database (for tests, the mount's Python side and tools)."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self._db = sqlite3.connect(f"file:{os.fspath(db_path)}?mode=ro", uri=True)

    def close(self) -> None:
        self._db.close()

    def properties(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._db.execute("SELECT key, value FROM properties")}

    def _entry(self, path: str, row: tuple[object, ...]) -> Entry:
        h, size, mode, mtime, flags, name, symlink, uid, gid = row
        return Entry(
            path=path,
            name=str(name),
            mode=int(str(mode)),
            size=int(str(size)),
            mtime=int(str(mtime)),
            flags=int(str(flags)),
            hash=h.hex() if isinstance(h, bytes) else None,
            symlink=str(symlink) if symlink is not None else None,
            uid=int(str(uid)),
            gid=int(str(gid)),
        )

    _COLS = "hash, size, mode, mtime, flags, name, symlink, uid, gid"

    def lookup(self, path: str) -> Entry | None:
        """The entry of repository path ``path`` (``""`` is the root), or None."""
        row = self._db.execute(
            f"SELECT {self._COLS} FROM catalog WHERE md5path_1=? AND md5path_2=?", md5path(path)
        ).fetchone()
        return self._entry(path, row) if row is not None else None

    def listdir(self, path: str) -> list[Entry]:
        """Entries whose parent is ``path``, sorted by name."""
        prefix = "" if path == "" else path
        rows = self._db.execute(
            f"SELECT {self._COLS} FROM catalog WHERE parent_1=? AND parent_2=? ORDER BY name",
            md5path(path),
        ).fetchall()
        return [self._entry(f"{prefix}/{r[5]}", r) for r in rows]

    def walk(self) -> Iterator[Entry]:
        """Every entry: the root, then each directory's children (in name order) as a block."""
        root = self.lookup("")
        if root is None:
            return
        yield root
        stack = [""]
        while stack:
            d = stack.pop()
            children = self.listdir(d)
            yield from children
            stack.extend(e.path for e in reversed(children) if e.is_dir)

    def chunks(self, path: str) -> list[Chunk]:
        """Chunk rows of a chunked file in ascending offset (empty for anything else)."""
        rows = self._db.execute(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=? "
            "ORDER BY offset",
            md5path(path),
        ).fetchall()
        return [Chunk(int(o), int(s), bytes(h).hex()) for o, s, h in rows]


@contextmanager
def open_store_catalog(store: str | os.PathLike[str]) -> Iterator[Catalog]:
    """The current catalog of a published store (decompressed into a temporary file)."""
    m = read_manifest(store)
    if m is None:
        raise UsageError(f"{os.fspath(store)}: no published revision (missing manifest)")
    obj = object_path(store, m.catalog_hash, SUFFIX_CATALOG)
    try:
        raw = zlib.decompress(obj.read_bytes())
    except OSError as e:
        raise UsageError(f"{obj}: cannot read catalog: {e.strerror}") from None
    except zlib.error:
        raise UsageError(f"{obj}: catalog object is not zlib data") from None
    with tempfile.TemporaryDirectory(prefix="cmio-catalog-") as d:
        db = Path(d) / "catalog.sqlite"
        db.write_bytes(raw)
        cat = Catalog(db)
        try:
            yield cat
        finally:
            cat.close()
