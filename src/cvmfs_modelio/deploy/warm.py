"""``warm``: pre-fetch model files into a CVMFS client cache (and the site squid on the way).

What a job wrapper does before the first event.  The real client fetches a chunked file
one chunk at a time per open handle, and an unchunked file whole at ``open()``
(cvmfs-facts.md §2), so parallelism needs several handles: the work is one item per chunk
(one per unchunked file), spread over ``parallel`` worker threads, each with its own handle
per file.  Touching one page of a chunk makes the client download, verify and cache the
whole chunk; the rest of the chunk is not read (the page cache is not what is warmed: jobs
drop it anyway).  Chunk boundaries come from the client (``user.chunk_list``), so the same
code runs on a real ``/cvmfs`` and on ``sim mount``; elsewhere a file is one item.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvmfs_modelio.chunks.layouts import read_cvmfs_layout
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.mounts import open_mount

TOUCH = 4096


@dataclass
class WarmFile:
    path: str
    size_bytes: int
    chunks: int  # objects of the file (1: unchunked or not on CVMFS)
    on_cvmfs: bool
    touched_bytes: int = 0
    start_ns: int = 0
    end_ns: int = 0

    @property
    def wall_ns(self) -> int:
        return self.end_ns - self.start_ns

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "chunks": self.chunks,
            "on_cvmfs": self.on_cvmfs,
            "touched_bytes": self.touched_bytes,
            "wall_ns": self.wall_ns,
        }


@dataclass
class WarmResult:
    parallel: int
    files: list[WarmFile]
    wall_ns: int
    mount: str | None
    counters_before: dict[str, int] | None
    counters_after: dict[str, int] | None
    notes: list[str] = field(default_factory=list)

    @property
    def counters_delta(self) -> dict[str, int] | None:
        if self.counters_before is None or self.counters_after is None:
            return None
        b = self.counters_before
        return {k: v - b.get(k, 0) for k, v in self.counters_after.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "parallel": self.parallel,
            "files": [f.to_json() for f in self.files],
            "wall_ns": self.wall_ns,
            "mount": self.mount,
            "counters_before": self.counters_before,
            "counters_after": self.counters_after,
            "counters_delta": self.counters_delta,
            "notes": self.notes,
        }


def expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Regular files named or below the directories named, in order, each once."""
    out: list[Path] = []
    seen: set[str] = set()
    for p in map(Path, paths):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise UsageError(f"{p}: no such file or directory") from None
        except OSError as e:
            raise UsageError(f"{p}: cannot stat: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            found = sorted(Path(d) / f for d, _dirs, files in os.walk(p) for f in files)
            files = [f for f in found if f.is_file()]
        elif stat.S_ISREG(st.st_mode):
            files = [p]
        else:
            raise UsageError(f"{p}: not a regular file or directory")
        for f in files:
            key = os.path.realpath(f)
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        raise UsageError(f"{', '.join(map(str, paths))}: no files to warm")
    return out


def _counters(path: Path) -> tuple[str | None, dict[str, int] | None, str | None]:
    try:
        m = open_mount(path)
    except UsageError:
        return None, None, None
    try:
        return str(m.root), m.counters(), None
    except UsageError as e:  # a real mount without cvmfs_talk rights, say
        return str(m.root), None, f"counters unavailable: {e}"


def warm(
    paths: Iterable[str | os.PathLike[str]],
    parallel: int = 4,
    progress: Callable[[str], None] | None = None,
) -> WarmResult:
    """Fetch every object of the files into the client cache on ``parallel`` handles."""
    if not 1 <= parallel <= 1024:
        raise UsageError(f"--parallel: {parallel} is not in [1, 1024]")
    files = expand(paths)
    plans: list[WarmFile] = []
    items: list[tuple[int, int]] = []  # (file index, offset)
    for i, f in enumerate(files):
        try:
            lay = read_cvmfs_layout(f)
            offsets = [int(o) for o in lay.offsets]
            on_cvmfs = True
        except UsageError:
            offsets, on_cvmfs = [0], False
        size = f.stat().st_size
        plans.append(WarmFile(str(f), size, len(offsets), on_cvmfs))
        items.extend((i, o) for o in offsets)
    mount, before, note = _counters(files[0])
    lock = threading.Lock()
    local = threading.local()
    done = [0] * len(files)

    def work(item: tuple[int, int]) -> None:
        i, off = item
        fds: dict[int, int] = local.__dict__.setdefault("fds", {})
        wf = plans[i]
        t0 = time.monotonic_ns()
        fd = fds.get(i)
        if fd is None:
            # open() of an unchunked file is its download
            try:
                fd = os.open(wf.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise UsageError(f"{wf.path}: cannot open: {e.strerror}") from None
            fds[i] = fd
        try:
            got = len(os.pread(fd, TOUCH, off)) if wf.size_bytes else 0
        except OSError as e:
            raise UsageError(f"{wf.path}: read at offset {off} failed: {e.strerror}") from None
        t1 = time.monotonic_ns()
        with lock:
            wf.touched_bytes += got
            wf.start_ns = min(wf.start_ns, t0) if wf.start_ns else t0
            wf.end_ns = max(wf.end_ns, t1)
            done[i] += 1
            finished = done[i] == wf.chunks
        if finished and progress is not None:
            progress(f"warmed {wf.path}: {wf.chunks} object(s) in {wf.wall_ns / 1e9:.2f} s")

    t_start = time.monotonic_ns()
    opened: list[dict[int, int]] = []

    def init() -> None:
        local.fds = {}
        with lock:
            opened.append(local.fds)

    try:
        with ThreadPoolExecutor(max_workers=parallel, initializer=init) as pool:
            for _ in pool.map(work, items):
                pass
    finally:
        for fds in opened:
            for fd in fds.values():
                os.close(fd)
    wall = time.monotonic_ns() - t_start
    after = _counters(files[0])[1] if before is not None else None
    res = WarmResult(parallel, plans, wall, mount, before, after)
    if note:
        res.notes.append(note)
    if not any(p.on_cvmfs for p in plans):
        res.notes.append("no file is on a CVMFS mount: files were opened and read, nothing fetched")
    return res
