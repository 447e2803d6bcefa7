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
- :meth:`CvmfsMount.cache_dir`: the client's local cache directory (objects by hash).
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cvmfs_modelio.chunks.layouts import Layout, read_cvmfs_layout
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.mount import FSTYPE as SIM_FSTYPE
from cvmfs_modelio.sim.mount import cleanup_mount, mounts, parse_counters, read_counters

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


def find_mount(path: str | os.PathLike[str]) -> MountInfo:
    """The CVMFS mount that holds ``path``; UsageError if it is on no CVMFS mount."""
    target = os.path.realpath(os.fspath(path))
    best: tuple[str, str, str] | None = None
    for mp, fstype, source in mounts():
        inside = target == mp or target.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) >= len(best[0])):
            best = (mp, fstype, source)
    kind = _kind(best[1], best[2]) if best else None
    if best is None or kind is None:
        raise UsageError(f"{os.fspath(path)}: not on a CVMFS mount")
    return MountInfo(Path(best[0]), best[1], best[2], kind)


def drop_page_cache(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Evict the kernel page cache of each file (``posix_fadvise(DONTNEED)``); files done.

    Opening a file is needed for the call: on CVMFS an unchunked file whose object is not
    in the client cache is downloaded by that open (the real client does the same).
    """
    n = 0
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise UsageError(f"{os.fspath(p)}: cannot open: {e.strerror}") from None
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
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
        out = self._talk("internal affairs")
        text = out.split("Raw Counters:", 1)[1] if "Raw Counters:" in out else out
        return parse_counters(text)

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

        The emulated client drops the page cache of every file itself (FUSE inode
        invalidation) without opening them; on a real mount the given files are evicted
        with fadvise *before* the cache cleanup, so that their opens hit the cache.
        """
        if self.kind == SIM:
            cleanup_mount(self.root)
            return
        drop_page_cache(paths)
        self._talk("cleanup 0")

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
