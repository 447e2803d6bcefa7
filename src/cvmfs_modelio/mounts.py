"""One interface to a CVMFS mount, real (``cvmfs2``) or emulated (``cmio-simfs``).

Experiments call :func:`open_mount` on any path inside a mount and then use the same
methods whichever client serves it:

- :meth:`CvmfsMount.layout`: a file's chunk layout (``user.chunk_list`` xattrs);
- :meth:`CvmfsMount.counters`: the client's counters under the real client's names
  (``cvmfs.n_fs_open``, ``cvmfs.n_fs_read``, ``fetch.n_downloads``,
  ``download.sz_transferred_bytes``, ``download.n_requests``...): ``cvmfs_talk -i REPO
  internal affairs`` on a real mount, the ``user.cmio_counters`` xattr on an emulated one;
- :meth:`CvmfsMount.clear_caches`: client cache (``cvmfs_talk cleanup 0`` / the emulated
  client's SIGUSR1) and the kernel page cache of files (``posix_fadvise(DONTNEED)``);
- :meth:`CvmfsMount.locate` / :meth:`CvmfsMount.find`: repository paths to mount paths;
- :meth:`CvmfsMount.client_info`: which client serves the mount (version, pid, host, proxy,
  timeouts, catalog revision and counters, and for the emulated one its client profile).

The parsers of what a real client answers (``cvmfs_talk`` output, ``/proc/mounts`` lines,
the root's magic xattrs) are plain functions, tested against a real client's recordings
(``../shared/testvectors/cvmfs-client``).
- :meth:`CvmfsMount.cache_dir`: the client's local cache directory (objects by hash).
"""

from __future__ import annotations

import errno
import fnmatch
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cvmfs_modelio.chunks.layouts import Layout, read_cvmfs_layout
from cvmfs_modelio.core.errors import MeasurementError, UsageError
from cvmfs_modelio.sim.mount import FSTYPE as SIM_FSTYPE
from cvmfs_modelio.sim.mount import (
    PROFILE_XATTR,
    cleanup_mount,
    mounts,
    parse_counters,
    read_counters,
    unescape_mount_field,
)

REAL = "real"
SIM = "sim"


@dataclass(frozen=True)
class MountInfo:
    """Where a CVMFS file system is mounted and which client serves it (``real``/``sim``)."""

    mountpoint: Path
    fstype: str
    source: str
    kind: str


def _kind(fstype: str, source: str) -> str | None:
    if fstype == SIM_FSTYPE:
        return SIM
    if fstype in ("fuse", "fuse.cvmfs2", "fuse.cvmfs") and source.startswith("cvmfs2"):
        return REAL
    return None


def parse_proc_mounts(text: str) -> list[tuple[str, str, str]]:
    """(mount point, file system type, source) of each ``/proc/mounts`` line.

    A real client's line reads ``cvmfs2 /cvmfs/REPO fuse ro,nosuid,...``: the kernel calls
    the file system ``fuse`` and the source is the program name.
    """
    rows = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3:
            rows.append((unescape_mount_field(f[1]), f[2], unescape_mount_field(f[0])))
    return rows


def find_mount(
    path: str | os.PathLike[str], table: Iterable[tuple[str, str, str]] | None = None
) -> MountInfo:
    """The CVMFS mount that holds ``path``; UsageError if it is on no CVMFS mount.

    ``table``: (mount point, type, source) rows, this process's mounts by default.
    """
    target = os.path.realpath(os.fspath(path)) if table is None else os.fspath(path)
    best: tuple[str, str, str] | None = None
    for mp, fstype, source in mounts() if table is None else table:
        inside = target == mp or target.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) >= len(best[0])):
            best = (mp, fstype, source)
    kind = _kind(best[1], best[2]) if best else None
    if best is None or kind is None:
        raise UsageError(f"{os.fspath(path)}: not on a CVMFS mount")
    return MountInfo(Path(best[0]), best[1], best[2], kind)


def parse_internal_affairs(text: str) -> dict[str, int]:
    """The ``Raw Counters:`` of ``cvmfs_talk internal affairs`` as {name: value}.

    Everything before that heading (SQLite statistics, per-call latency histograms whose
    lines also contain ``|``) is not a counter and is skipped.
    """
    if "Raw Counters:" not in text:
        raise UsageError("cvmfs_talk internal affairs: no 'Raw Counters:' section in its answer")
    return parse_counters(text.split("Raw Counters:", 1)[1])


CLEANUP_ANSWERS = ("OK", "Not fully cleaned (there might be pinned chunks)")


def check_cleanup_answer(text: str) -> bool:
    """True if ``cvmfs_talk cleanup 0`` emptied the cache, False if pinned objects (the
    loaded catalogs) stayed, as they always do on a mounted repository; UsageError for
    any other answer (the client did not clean)."""
    answer = text.strip()
    if answer not in CLEANUP_ANSWERS:
        raise UsageError(f"cvmfs_talk cleanup 0: unexpected answer {answer!r}")
    return answer == "OK"


@dataclass(frozen=True)
class ClientInfo:
    """Who serves a mount, from its root's magic xattrs (times in seconds)."""

    kind: str  # real / sim
    version: str
    pid: int
    fqrn: str
    revision: int
    root_hash: str
    host: str
    proxy: str
    timeout_s: int  # through a proxy (CVMFS_TIMEOUT)
    timeout_direct_s: int  # without one (CVMFS_TIMEOUT_DIRECT)
    uptime_s: int  # whole minutes, as the client reports them
    catalogs: int
    repo_counters: dict[str, int] = field(default_factory=dict)
    client_profile: str = "cvmfs2"  # the emulated client's profile; "cvmfs2" for the real one


ROOT_XATTRS = (
    "user.version",
    "user.pid",
    "user.fqrn",
    "user.revision",
    "user.root_hash",
    "user.host",
    "user.proxy",
    "user.timeout",
    "user.timeout_direct",
    "user.uptime",
    "user.nclg",
    "user.repo_counters",
)


def parse_csv_counters(text: str) -> dict[str, int]:
    """``name,value`` lines (``user.repo_counters``) as {name: value}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(",")
        if not sep:
            raise UsageError(f"repository counters: line {line!r} is not name,value")
        try:
            out[name] = int(value)
        except ValueError:
            raise UsageError(f"repository counters: {name} is not a number: {value!r}") from None
    return out


def parse_client_xattrs(kind: str, values: Mapping[str, str]) -> ClientInfo:
    """A :class:`ClientInfo` from root xattr values (missing or malformed: UsageError)."""
    missing = [n for n in ROOT_XATTRS if n not in values]
    if missing:
        raise UsageError(f"the client does not answer {', '.join(missing)}")

    def num(name: str) -> int:
        try:
            return int(values[name])
        except ValueError:
            raise UsageError(f"{name}: {values[name]!r} is not a number") from None

    return ClientInfo(
        kind=kind,
        version=values["user.version"],
        pid=num("user.pid"),
        fqrn=values["user.fqrn"],
        revision=num("user.revision"),
        root_hash=values["user.root_hash"],
        host=values["user.host"],
        proxy=values["user.proxy"],
        timeout_s=num("user.timeout"),
        timeout_direct_s=num("user.timeout_direct"),
        uptime_s=60 * num("user.uptime"),
        catalogs=num("user.nclg"),
        repo_counters=parse_csv_counters(values["user.repo_counters"]),
        client_profile=values.get(PROFILE_XATTR, "cvmfs2"),
    )


# fdatasync errors that mean "nothing to write back here" (read-only or FUSE file systems).
_NO_SYNC = (errno.EROFS, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def drop_page_cache(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Evict the kernel page cache of each file and check it; the number of files done.

    Each file's dirty pages are written back first (``fdatasync``: DONTNEED drops clean
    pages only), then ``posix_fadvise(DONTNEED)``; a file that still has pages resident
    afterwards (another process maps it) raises MeasurementError: a run after it would not
    be cold.  Opening a file is needed for the call: on CVMFS an unchunked file whose
    object is not in the client cache is downloaded by that open (the real client does
    the same).
    """
    from cvmfs_modelio import _native

    n = 0
    for p in paths:
        name = os.fspath(p)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise UsageError(f"{name}: cannot open: {e.strerror}") from None
        try:
            try:
                os.fdatasync(fd)
            except OSError as e:
                if e.errno not in _NO_SYNC:
                    raise UsageError(f"{name}: fdatasync before eviction: {e.strerror}") from None
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > 0:
            left = int(_native.probe_resident_pages(name).sum())
            if left:
                total = -(-size // os.sysconf("SC_PAGESIZE"))
                raise MeasurementError(
                    f"{name}: cold run refused: {left} of {total} pages still in the page "
                    "cache after fdatasync and eviction; is another process mapping it?"
                )
        n += 1
    return n


class CvmfsMount:
    """A real or emulated CVMFS mount, reached through the same calls."""

    def __init__(self, info: MountInfo) -> None:
        self.info = info
        self.root = info.mountpoint
        self.kind = info.kind

    def repository(self) -> str:
        """The repository name (``user.fqrn`` of the mount root)."""
        try:
            return os.getxattr(self.root, "user.fqrn").decode()
        except OSError as e:
            raise UsageError(f"{self.root}: cannot read user.fqrn: {e.strerror}") from None

    # -- files
    def locate(self, repo_path: str) -> Path:
        """Mount path of the repository path ``repo_path`` (``/a/b`` or ``a/b``); must exist."""
        p = self.root / repo_path.lstrip("/")
        if not p.exists():
            raise UsageError(f"{p}: no such file in {self.kind} CVMFS mount {self.root}")
        return p

    def repo_path(self, path: str | os.PathLike[str]) -> str:
        """Repository path (``/a/b``) of a path inside the mount."""
        rel = os.path.relpath(os.path.realpath(os.fspath(path)), self.root)
        if rel.startswith(".."):
            raise UsageError(f"{os.fspath(path)}: not inside {self.root}")
        return "/" + rel if rel != "." else ""

    def find(self, pattern: str = "*", under: str = "") -> list[Path]:
        """Regular files below ``under`` whose name matches ``pattern`` (sorted)."""
        base = self.locate(under) if under else self.root
        out: list[Path] = []
        for dirpath, _dirs, files in os.walk(base):
            out.extend(Path(dirpath) / f for f in files if fnmatch.fnmatch(f, pattern))
        return sorted(out)

    def layout(self, path: str | os.PathLike[str]) -> Layout:
        """Chunk layout of a file as the client reports it (``user.chunk_list``)."""
        return read_cvmfs_layout(path)

    # -- counters
    def counters(self) -> dict[str, int]:
        """The client's counters, ``{name: value}`` with the real client's names."""
        if self.kind == SIM:
            return read_counters(self.root)
        return parse_internal_affairs(self._talk("internal affairs"))

    def client_info(self) -> ClientInfo:
        """Which client serves the mount (its root's magic xattrs)."""
        names = [*ROOT_XATTRS, *([PROFILE_XATTR] if self.kind == SIM else [])]
        values = {}
        for name in names:
            try:
                values[name] = os.getxattr(self.root, name).decode()
            except OSError as e:
                raise UsageError(f"{self.root}: cannot read {name}: {e.strerror}") from None
        return parse_client_xattrs(self.kind, values)

    # -- caches
    def cache_dir(self) -> Path:
        """The client's cache directory (``XX/<rest of hash>`` objects, ``txn/`` downloads).

        Emulated: the ``--cache`` argument of the client process (``user.pid``); real:
        ``CVMFS_CACHE_DIR`` from ``cvmfs_talk -i REPO parameters``.
        """
        if self.kind == SIM:
            try:
                pid = int(os.getxattr(self.root, "user.pid"))
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError) as e:
                raise UsageError(f"{self.root}: cannot find the client's cache: {e}") from None
            for a, b in itertools.pairwise(argv):
                if a == b"--cache":
                    return Path(b.decode())
            raise UsageError(f"{self.root}: the client was started without --cache")
        for line in self._talk("parameters").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "CVMFS_CACHE_DIR" and value.strip():
                return Path(value.strip().split()[0])
        raise UsageError(f"{self.root}: cvmfs_talk parameters shows no CVMFS_CACHE_DIR")

    def clear_caches(self, paths: Iterable[str | os.PathLike[str]] = ()) -> None:
        """Cold state: empty the client cache and drop the page cache of ``paths``.

        The given files are evicted (fdatasync + fadvise) and checked *before* the cache
        cleanup, so that their opens hit the client cache; the emulated client then also
        drops the page cache of every file itself (FUSE inode invalidation).
        """
        # Evicted and checked while the client cache is still warm (opening a file then
        # fetches nothing); the emulated client also invalidates every inode's pages.
        drop_page_cache(paths)
        if self.kind == SIM:
            cleanup_mount(self.root)
            return
        check_cleanup_answer(self._talk("cleanup 0"))

    def drop_page_cache(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Warm state: evict only the kernel page cache of ``paths`` (client cache kept)."""
        return drop_page_cache(paths)

    def _talk(self, command: str) -> str:
        if shutil.which("cvmfs_talk") is None:
            raise UsageError(f"{self.root}: cvmfs_talk is not installed (needed on real CVMFS)")
        argv = ["cvmfs_talk", "-i", self.repository(), *command.split()]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise UsageError(f"{' '.join(argv)}: {msg[-1] if msg else 'failed'}")
        return r.stdout


def open_mount(path: str | os.PathLike[str]) -> CvmfsMount:
    """The CVMFS mount (real or emulated) holding ``path``."""
    return CvmfsMount(find_mount(path))
