"""``sim publish``: write a directory tree into an emulated CVMFS store.

Shaped like CVMFS's ingestion pipeline: small stages joined in sequence,

    scan -> chunk -> read -> compress -> hash -> write -> register -> commit

``scan`` validates the whole source tree before anything is written (so bad input leaves
the store untouched); ``chunk`` runs the CVMFS xor32 chunker on each file; ``read``,
``compress``, ``hash`` and ``write`` run per piece (chunk or whole file) in a thread pool,
streaming 1 MiB blocks (zlib, hashlib and pread release the GIL); ``register`` adds the
catalog rows in source order; ``commit`` writes the catalog object and then the manifest,
each atomically.  Every stage's time is accumulated so that a run reports where it went.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cvmfs_modelio import _native
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.catalog import CatalogWriter, Chunk, Entry
from cvmfs_modelio.sim.store import (
    COMPRESSION_CODES,
    DATA,
    DEFAULT_REPO,
    FLAG_BUNDLE_TRIGGER,
    FLAG_CHUNKED,
    FLAG_COMPRESSION_SHIFT,
    FLAG_DIR,
    FLAG_FILE,
    FLAG_LINK,
    MANIFEST,
    SUFFIX_CATALOG,
    SUFFIX_CHUNK,
    SUFFIX_WHOLE,
    Manifest,
    object_path,
    read_manifest,
    write_atomic,
)

DEFAULT_MIN = 4 * 1024 * 1024
DEFAULT_AVG = 8 * 1024 * 1024
DEFAULT_MAX = 16 * 1024 * 1024
ZLIB_LEVEL = 6
BLOCK = 1 << 20
SPILL = 64 << 20  # a piece's stored bytes beyond this go to a temp file, not memory
DIR_SIZE = 4096
# Per-piece stages (read..write) sum the time of all worker threads, so they may add up to
# more than the wall time; "wait" is the main thread blocked on the workers.
STAGES = ("scan", "chunk", "read", "compress", "hash", "write", "register", "commit", "wait")
_TXN = ".txn"


@dataclass(frozen=True)
class PublishParams:
    """Chunking and compression settings (sizes in bytes); ``chunking=False`` stores files whole."""

    min_size: int = DEFAULT_MIN
    avg_size: int = DEFAULT_AVG
    max_size: int = DEFAULT_MAX
    chunking: bool = True
    compression: str = "zlib"
    repository: str | None = None
    workers: int = 0

    def validate(self) -> None:
        if self.chunking and not 32 <= self.min_size < self.avg_size < self.max_size:
            raise UsageError(
                f"--min/--avg/--max: need 32 <= min < avg < max, got "
                f"{self.min_size}/{self.avg_size}/{self.max_size}"
            )
        if self.compression not in COMPRESSION_CODES:
            raise UsageError(f"--compression: {self.compression!r} is not zlib or none")
        if self.repository is not None and (
            not self.repository or any(c in self.repository for c in "\n/")
        ):
            raise UsageError(f"--repo: {self.repository!r} is not a valid repository name")


@dataclass
class PublishResult:
    """What a publish did.  Sizes in bytes, times in ns."""

    store: str
    revision: int
    repository: str
    catalog_hash: str
    catalog_bytes: int
    files: int = 0
    chunked_files: int = 0
    chunks: int = 0
    directories: int = 0
    symlinks: int = 0
    bundle_triggers: int = 0  # files linked to a .cvmfsbundle-<name> spec beside them
    bytes_in: int = 0
    objects_referenced: int = 0
    objects_new: int = 0
    bytes_referenced: int = 0
    bytes_added: int = 0
    stage_ns: dict[str, int] = field(default_factory=dict)
    wall_ns: int = 0


# ------------------------------------------------------------------ scan stage


@dataclass(frozen=True)
class _SrcEntry:
    path: str  # repository path, "" for the root
    abspath: str
    st: os.stat_result
    link: str | None = None


def _scan(src: Path) -> list[_SrcEntry]:
    """Every entry of ``src`` (lstat), validated; raises UsageError on the first bad one."""
    root_real = os.path.realpath(src)
    out: list[_SrcEntry] = []

    def visit(abspath: str, rel: str) -> None:
        try:
            # the root may be a symlink to the tree (followed); nothing below it is
            st = os.stat(abspath) if rel == "" else os.lstat(abspath)
        except OSError as e:
            raise UsageError(f"{abspath}: cannot stat: {e.strerror}") from None
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            target = os.readlink(abspath)
            resolved = os.path.realpath(os.path.join(os.path.dirname(abspath), target))
            if os.path.isabs(target) or not _inside(resolved, root_real):
                raise UsageError(
                    f"{abspath}: symlink target {target!r} leaves the source tree {src}"
                )
            out.append(_SrcEntry(rel, abspath, st, target))
            return
        if stat.S_ISREG(mode):
            try:
                fd = os.open(abspath, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise UsageError(f"{abspath}: cannot read file: {e.strerror}") from None
            os.close(fd)
            if abspath.endswith(".onnx"):
                # a model naming external data outside its directory is refused: a client
                # loading it from the repository would read that path on its own machine
                from cvmfs_modelio.models.formats.onnx import external_files

                external_files(Path(abspath), strict=False)
            out.append(_SrcEntry(rel, abspath, st))
            return
        if not stat.S_ISDIR(mode):
            raise UsageError(f"{abspath}: {_kind(mode)} cannot be published (special file)")
        out.append(_SrcEntry(rel, abspath, st))
        try:
            names = sorted(os.listdir(abspath))
        except OSError as e:
            raise UsageError(f"{abspath}: cannot list directory: {e.strerror}") from None
        for n in names:
            try:
                n.encode("utf-8")
            except UnicodeEncodeError:
                raise UsageError(
                    f"{os.path.join(abspath, n)!r}: file name is not valid UTF-8"
                ) from None
            visit(os.path.join(abspath, n), f"{rel}/{n}")

    visit(str(src), "")
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return f"file of type {stat.S_IFMT(mode):o}"


# ------------------------------------------------------- per-piece stages


@dataclass
class _Piece:
    """A byte range of a source file that becomes one stored object."""

    abspath: str
    offset: int
    size: int
    suffix: str
    hash: str = ""
    stored: int = 0
    new: bool = False
    object: Path | None = None
    ns: dict[str, int] = field(default_factory=dict)


class _Clock:
    """Accumulates ns per stage name for one task (no locking: one task, one thread)."""

    def __init__(self, acc: dict[str, int]) -> None:
        self.acc = acc
        self.t = time.perf_counter_ns()

    def lap(self, stage: str) -> None:
        now = time.perf_counter_ns()
        self.acc[stage] = self.acc.get(stage, 0) + now - self.t
        self.t = now


class _Spool:
    """A piece's stored bytes: kept in memory, spilled to a temp file beyond SPILL bytes."""

    def __init__(self, txn: Path) -> None:
        self.txn = txn
        self.parts: list[bytes] = []
        self.size = 0
        self.file: BinaryIO | None = None
        self.path: str | None = None

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
            return
        self.parts.append(data)
        if self.size > SPILL:
            fd, self.path = tempfile.mkstemp(dir=self.txn, prefix="obj-")
            self.file = os.fdopen(fd, "wb")
            for p in self.parts:
                self.file.write(p)
            self.parts = []

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class _ObjectWriter:
    """The ``write`` stage: content-addressed, create-only, atomic (temp file + link)."""

    def __init__(self, store: Path, txn: Path, created: list[Path]) -> None:
        self.store = store
        self.txn = txn
        # every object this run created, appended by the worker that created it (list.append
        # is atomic), so a failed run can remove them even before they were registered
        self.created = created

    def put(self, hexhash: str, suffix: str, spool: _Spool) -> tuple[Path, bool]:
        """Store the object unless present; returns (path, whether it was new)."""
        dest = object_path(self.store, hexhash, suffix)
        try:
            if dest.exists():
                return dest, False
            if spool.file is None:
                fd, spool.path = tempfile.mkstemp(dir=self.txn, prefix="obj-")
                spool.file = os.fdopen(fd, "wb")
                for p in spool.parts:
                    spool.file.write(p)
            spool.file.close()
            assert spool.path is not None
            try:
                os.link(spool.path, dest)
            except FileExistsError:
                return dest, False  # another piece with the same content won the race
            self.created.append(dest)
            return dest, True
        finally:
            spool.discard()


def _process_piece(piece: _Piece, compression: str, writer: _ObjectWriter) -> _Piece:
    """read -> compress -> hash -> write for one piece, streaming BLOCK bytes at a time."""
    clock = _Clock(piece.ns)
    comp = zlib.compressobj(ZLIB_LEVEL) if compression == "zlib" else None
    sha = hashlib.sha1()
    spool = _Spool(writer.txn)
    try:
        fd = os.open(piece.abspath, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pos, end = piece.offset, piece.offset + piece.size
            while pos < end:
                block = os.pread(fd, min(BLOCK, end - pos), pos)
                clock.lap("read")
                if not block:
                    raise UsageError(
                        f"{piece.abspath}: file shrank while publishing (at byte {pos})"
                    )
                pos += len(block)
                out = comp.compress(block) if comp is not None else block
                clock.lap("compress")
                sha.update(out)
                clock.lap("hash")
                spool.add(out)
                clock.lap("write")
        finally:
            os.close(fd)
        if comp is not None:
            tail = comp.flush()
            clock.lap("compress")
            sha.update(tail)
            clock.lap("hash")
            spool.add(tail)
    except BaseException:
        spool.discard()
        raise
    piece.hash = sha.hexdigest()
    piece.stored = spool.size
    piece.object, piece.new = writer.put(piece.hash, piece.suffix, spool)
    clock.lap("write")
    return piece


# ---------------------------------------------------------------- the pipeline


def _check_store(store: Path, src: Path) -> None:
    src_real, store_real = os.path.realpath(src), os.path.realpath(store)
    if _inside(store_real, src_real) or _inside(src_real, store_real):
        raise UsageError(f"{store}: the store and the source tree {src} overlap")
    if store.exists() and not store.is_dir():
        raise UsageError(f"{store}: exists and is not a directory")
    if (
        store.is_dir()
        and not (store / MANIFEST).exists()
        and not (store / DATA).is_dir()
        and any(store.iterdir())
    ):
        raise UsageError(f"{store}: not empty and not a store (no {MANIFEST} or {DATA}/)")


def publish(
    src_dir: str | os.PathLike[str],
    store_dir: str | os.PathLike[str],
    params: PublishParams | None = None,
    progress: Callable[[str], None] | None = None,
) -> PublishResult:
    """Publish ``src_dir`` as a new revision of the store ``store_dir``.

    Raises UsageError (one line naming the file) on a bad source tree or store; in that
    case the store is left as it was (objects written by a failed run are removed).
    """
    params = params or PublishParams()
    params.validate()
    src, store = Path(src_dir), Path(store_dir)
    t_wall = time.perf_counter_ns()
    stage_ns = dict.fromkeys(STAGES, 0)
    if not src.exists():
        raise UsageError(f"{src}: no such file or directory")
    if not src.is_dir():
        raise UsageError(f"{src}: not a directory")
    _check_store(store, src)
    clock = _Clock(stage_ns)
    entries = _scan(src)
    clock.lap("scan")
    old = read_manifest(store) if store.is_dir() else None

    created: list[Path] = []  # directories this run created, removed again on failure
    new_objects: list[Path] = []
    store_fd = -1
    try:
        if not store.exists():
            store.mkdir(parents=True)
            created.append(store)
        store_fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(store_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{store}: another publish into this store is running") from None
        old = read_manifest(store)  # re-read under the lock
        if not (store / DATA).is_dir():
            (store / DATA).mkdir()
            created.append(store / DATA)
        for i in range(256):
            (store / DATA / f"{i:02x}").mkdir(exist_ok=True)
        txn = store / _TXN
        shutil.rmtree(txn, ignore_errors=True)  # leftovers of a killed run
        txn.mkdir()
        try:
            result = _run(entries, store, txn, params, old, stage_ns, new_objects, progress)
        finally:
            shutil.rmtree(txn, ignore_errors=True)
    except BaseException:
        for p in new_objects:
            p.unlink(missing_ok=True)
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)
        raise
    finally:
        if store_fd >= 0:
            os.close(store_fd)
    result.stage_ns = stage_ns
    result.wall_ns = time.perf_counter_ns() - t_wall
    return result


def _run(
    entries: list[_SrcEntry],
    store: Path,
    txn: Path,
    params: PublishParams,
    old: Manifest | None,
    stage_ns: dict[str, int],
    new_objects: list[Path],
    progress: Callable[[str], None] | None,
) -> PublishResult:
    revision = old.revision + 1 if old else 1
    repo = params.repository or (old.repository if old else DEFAULT_REPO)
    comp_flags = COMPRESSION_CODES[params.compression] << FLAG_COMPRESSION_SHIFT
    props = {
        "revision": str(revision),
        "compression": params.compression,
        "min_chunk": str(params.min_size),
        "avg_chunk": str(params.avg_size),
        "max_chunk": str(params.max_size),
        "chunking": "1" if params.chunking else "0",
        "repository": repo,
    }
    db_path = txn / "catalog.sqlite"
    cat = CatalogWriter(db_path, props)
    res = PublishResult(str(store), revision, repo, "", 0)
    writer = _ObjectWriter(store, txn, new_objects)
    triggers = bundle_triggers(entries)
    workers = params.workers or (os.cpu_count() or 1)
    referenced: set[str] = set()
    clock = _Clock(stage_ns)

    def register(e: _SrcEntry, pieces: list[_Piece]) -> None:
        clock.lap("wait")
        for p in pieces:
            for k, v in p.ns.items():
                stage_ns[k] += v
            if p.new:
                res.objects_new += 1
                res.bytes_added += p.stored
            key = p.hash + p.suffix
            if key not in referenced:
                referenced.add(key)
                res.objects_referenced += 1
                res.bytes_referenced += p.stored
        chunked = len(pieces) > 1
        flags = FLAG_FILE | comp_flags | (FLAG_CHUNKED if chunked else 0)
        if e.path in triggers:
            flags |= FLAG_BUNDLE_TRIGGER
            res.bundle_triggers += 1
        cat.add(
            _entry(e, flags, None if chunked else pieces[0].hash),
            [Chunk(p.offset, p.size, p.hash) for p in pieces] if chunked else None,
        )
        res.files += 1
        res.bytes_in += e.st.st_size
        if chunked:
            res.chunked_files += 1
            res.chunks += len(pieces)
        clock.lap("register")
        if progress is not None:
            progress(e.path)

    pending: deque[tuple[_SrcEntry, list[Future[_Piece]]]] = deque()
    in_flight = 0
    window = 2 * workers
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="publish") as pool:

            def drain(limit: int) -> None:
                nonlocal in_flight
                while pending and in_flight > limit:
                    e, futs = pending.popleft()
                    pieces = [f.result() for f in futs]
                    in_flight -= len(futs)
                    register(e, pieces)

            for e in entries:
                mode = e.st.st_mode
                if stat.S_ISDIR(mode):
                    clock.lap("wait")
                    cat.add(_entry(e, FLAG_DIR, None, size=DIR_SIZE))
                    res.directories += 1
                    clock.lap("register")
                    continue
                if stat.S_ISLNK(mode):
                    clock.lap("wait")
                    cat.add(_entry(e, FLAG_LINK, None, size=len(os.fsencode(e.link or ""))))
                    res.symlinks += 1
                    clock.lap("register")
                    continue
                clock.lap("wait")
                pieces = _chunk(e, params)
                clock.lap("chunk")
                futs = [pool.submit(_process_piece, p, params.compression, writer) for p in pieces]
                pending.append((e, futs))
                in_flight += len(futs)
                drain(window)
            drain(0)
    except OSError as err:
        cat.abort()
        name = getattr(err, "filename", None) or "store"
        raise UsageError(f"{name}: {err.strerror or err}") from None
    except BaseException:
        cat.abort()
        raise
    cat.close()
    clock.lap("register")

    # commit: the catalog object, then the manifest that names it (each atomic)
    raw = db_path.read_bytes()
    stored = zlib.compress(raw, ZLIB_LEVEL)
    chash = hashlib.sha1(stored).hexdigest()
    spool = _Spool(txn)
    spool.add(stored)
    writer.put(chash, SUFFIX_CATALOG, spool)
    manifest = Manifest(chash, len(stored), revision, repo, published_s=int(time.time()))
    write_atomic(store / MANIFEST, manifest.to_bytes())
    clock.lap("commit")
    res.catalog_hash = chash
    res.catalog_bytes = len(stored)
    return res


def bundle_triggers(entries: list[_SrcEntry]) -> set[str]:
    """Paths of regular files with a ``.cvmfsbundle-<name>`` spec beside them: the publisher
    links each spec to its trigger, as CVMFS 2.14 does (the client's ``bundle_trigger``)."""
    from cvmfs_modelio.deploy.bundlespec import trigger_of

    files = {e.path for e in entries if stat.S_ISREG(e.st.st_mode)}
    out = set()
    for p in files:
        d, _, name = p.rpartition("/")
        trigger = trigger_of(name)
        if trigger is not None and f"{d}/{trigger}" in files:
            out.add(f"{d}/{trigger}")
    return out


def _chunk(e: _SrcEntry, params: PublishParams) -> list[_Piece]:
    """The ``chunk`` stage: cut a file with the CVMFS xor32 chunker (files <= min stay whole)."""
    size = e.st.st_size
    if params.chunking and size > params.min_size:
        try:
            offsets, fsize = _native.xor32_offsets_file(
                e.abspath, params.min_size, params.avg_size, params.max_size
            )
        except RuntimeError as err:
            raise UsageError(f"{e.abspath}: cannot read file: {err}") from None
        if fsize != size:
            raise UsageError(f"{e.abspath}: file changed size while publishing")
        offs = [int(o) for o in offsets]
        if len(offs) > 1:
            bounds = [*offs, size]
            return [
                _Piece(e.abspath, bounds[i], bounds[i + 1] - bounds[i], SUFFIX_CHUNK)
                for i in range(len(offs))
            ]
    return [_Piece(e.abspath, 0, size, SUFFIX_WHOLE)]


def _entry(e: _SrcEntry, flags: int, hexhash: str | None, size: int | None = None) -> Entry:
    return Entry(
        path=e.path,
        name=e.path.rsplit("/", 1)[-1],
        mode=e.st.st_mode,
        size=e.st.st_size if size is None else size,
        mtime=int(e.st.st_mtime),
        flags=flags,
        hash=hexhash,
        symlink=e.link,
        uid=e.st.st_uid,
        gid=e.st.st_gid,
    )


def iter_objects(store: str | os.PathLike[str]) -> Iterator[Path]:
    """Every object file in ``store`` (whole files, chunks, catalogs)."""
    data = Path(store) / DATA
    for sub in sorted(data.iterdir()) if data.is_dir() else []:
        if sub.is_dir() and len(sub.name) == 2:
            yield from sorted(p for p in sub.iterdir() if p.is_file())


__all__ = ["PublishParams", "PublishResult", "iter_objects", "publish"]
