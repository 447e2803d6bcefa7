"""Kernel tracepoints of a traced run, recorded through a private tracefs instance.

No ``perf record`` process: the recorder creates its own ftrace instance
(``/sys/kernel/tracing/instances/cmio-<pid>-<n>``), sets ``trace_clock`` to ``mono``
(CLOCK_MONOTONIC, the clock of every other vantage point), enables

- ``filemap:mm_filemap_add_to_page_cache``: a page (folio) entered the page cache, the I/O;
- ``filemap:mm_filemap_fault`` and ``filemap:mm_filemap_map_pages``: file pages entering a
  process's page table (the faulting page, and the cached neighbours that fault-around maps
  with it): what a program touched through a mapping, at the exact time;
- ``fuse:fuse_request_send`` / ``fuse:fuse_request_end``: every FUSE request and its reply
  (paired by request id: the time a reader waited for the FUSE client);
- ``task:task_newtask``: every new task, so that kernel events can be given to the traced
  processes (a new thread belongs to its creator's process);

filtered in the kernel to the devices and inodes under ``--match`` (and to the FUSE
connections of the mounts they are on), and copies the binary ring-buffer pages
(``per_cpu/cpuN/trace_pipe_raw``) into ``TRACE/kernel/cpuN.raw`` as they fill.  Nothing is
decoded while the program runs: :mod:`cvmfs_modelio.trace.kernel` turns the pages into events
when the trace is read.  Only the standard library is imported here, so the ``trace``
command starts fast.

Nothing is lost silently: the buffer does not overwrite (``options/overwrite`` = 0), and the
per-CPU ``stats`` (dropped, overrun, commit overrun) and the pages' "missed events" flags
are written to ``TRACE/kernel.json`` with the status; an instance that could not be created
is a status ``unavailable`` with the reason.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
KERNEL_DIR = "kernel"
STATUS_FILE = "kernel.json"
GATE_FILE = "kernel.pending"
GATE_ENV = "CMIO_TRACE_GATE"

PAGE_EVENTS = (
    "filemap/mm_filemap_add_to_page_cache",
    "filemap/mm_filemap_fault",
    "filemap/mm_filemap_map_pages",
)
FUSE_EVENTS = ("fuse/fuse_request_send", "fuse/fuse_request_end")
TASK_EVENTS = ("task/task_newtask",)
MAX_FILTER_INODES = 64
MIN_BUFFER_KB = 1024
MAX_BUFFER_KB = 64 * 1024
# Bytes of ring buffer per 4 KiB page of the traced files: one add_to_page_cache (48 B with
# its header), a fault (32 B) and a share of the FUSE requests, with slack.
BUFFER_BYTES_PER_PAGE = 128


class KernelUnavailable(Exception):
    """Kernel tracepoints cannot be recorded here (the message says why)."""


def tracefs_root() -> Path | None:
    """The mounted tracefs (``/sys/kernel/tracing``), or None.

    As root, a tracefs that is not mounted yet is mounted on ``/sys/kernel/tracing``, as
    libtracefs and trace-cmd do: a machine booted without systemd (containers, CI) does not
    mount it, and kernel tracing must not depend on how the machine was booted.
    """
    for root in TRACEFS_ROOTS:
        if (root / "instances").is_dir():
            return root
    if os.geteuid() == 0 and _mount_tracefs(TRACEFS_ROOTS[0]):
        return TRACEFS_ROOTS[0]
    return None


def _mount_tracefs(root: Path) -> bool:
    """Mount tracefs on ``root`` (an empty directory of sysfs); whether it is usable now."""
    import subprocess

    if not root.is_dir():
        return False
    try:
        subprocess.run(
            ["mount", "-t", "tracefs", "tracefs", str(root)],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return (root / "instances").is_dir()


def unavailable_reason() -> str | None:
    """Why kernel tracepoints cannot be recorded here, or None if they can."""
    if os.geteuid() != 0:
        return "not running as root (tracefs instances need root)"
    root = tracefs_root()
    if root is None:
        return "tracefs is not mounted (no /sys/kernel/tracing/instances)"
    for ev in PAGE_EVENTS[:2]:
        if not (root / "events" / ev).is_dir():
            return f"the kernel has no tracepoint {ev.replace('/', ':')}"
    return None


def kernel_dev(st_dev: int) -> int:
    """The kernel's ``dev_t`` encoding (``MAJOR << 20 | MINOR``) of a user-space ``st_dev``."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def _mount_of(path: str) -> tuple[str, str]:
    """Mount point and file system type of the mount holding ``path`` (mountinfo)."""
    target = os.path.realpath(path)
    best, fstype = "", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            lf, rf = left.split(), right.split()
            if len(lf) < 5 or not rf:
                continue
            mp = lf[4].replace("\\040", " ")
            inside = target == mp or target.startswith(mp.rstrip("/") + "/")
            if inside and len(mp) >= len(best):
                best, fstype = mp, rf[0]
    return best, fstype


class Targets:
    """What the kernel filters let through: devices (kernel encoding), inodes, FUSE connections.

    ``devs`` empty means no filter (every file); ``inodes`` None means every inode of ``devs``.
    (A plain class: ``dataclasses`` imports ``inspect``, 8 ms of the ``trace`` command's start.)
    """

    def __init__(self, fuse_all: bool = False) -> None:
        self.devs: list[int] = []
        self.inodes: list[int] | None = None
        self.fuse: list[int] = []
        self.fuse_all = fuse_all
        self.fuse_mounts: dict[int, str] = {}  # connection -> mount point

    def page_filter(self) -> str:
        if not self.devs:
            return ""
        dev = " || ".join(f"s_dev == {d}" for d in sorted(set(self.devs)))
        if self.inodes:
            ino = " || ".join(f"i_ino == {i}" for i in self.inodes)
            return f"({dev}) && ({ino})"
        return dev

    def fuse_filter(self) -> str:
        return " || ".join(f"connection == {c}" for c in sorted(set(self.fuse)))


def targets_for(match: Sequence[str], limit: int = MAX_FILTER_INODES) -> Targets:
    """Kernel filters for the files under the ``--match`` prefixes (stat only, never open:
    opening an unchunked file on CVMFS downloads it)."""
    if not match:
        return Targets(fuse_all=True)
    t = Targets()
    inodes: set[int] | None = set()
    for prefix in match:
        try:
            st = os.stat(prefix)
        except OSError:
            # A prefix that does not exist (yet): anything may appear on its parent's device.
            parent = os.path.dirname(prefix.rstrip("/")) or "/"
            try:
                st = os.stat(parent)
            except OSError:
                continue
            t.devs.append(kernel_dev(st.st_dev))
            inodes = None
            continue
        t.devs.append(kernel_dev(st.st_dev))
        mountpoint, fstype = _mount_of(prefix)
        if fstype.startswith("fuse"):
            t.fuse.append(kernel_dev(st.st_dev))
            t.fuse_mounts[kernel_dev(st.st_dev)] = mountpoint
        if inodes is not None:
            inodes = _inodes_under(prefix, st, inodes, limit)
    t.inodes = sorted(inodes) if inodes else None
    return t


def _inodes_under(prefix: str, st: os.stat_result, acc: set[int], limit: int) -> set[int] | None:
    """``acc`` plus the inodes of the regular files under ``prefix``; None past ``limit``."""
    import stat as statmod

    if statmod.S_ISREG(st.st_mode):
        acc.add(st.st_ino)
        return acc if len(acc) <= limit else None
    stack = [prefix]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=True):
                    acc.add(e.stat(follow_symlinks=True).st_ino)
            except OSError:
                continue
            if len(acc) > limit:
                return None
    return acc


def _tree_bytes(match: Sequence[str]) -> int:
    total = 0
    for prefix in match:
        with contextlib.suppress(OSError):
            st = os.stat(prefix)
            if not os.path.isdir(prefix):
                total += st.st_size
                continue
            for dirpath, _dirs, files in os.walk(prefix):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.stat(os.path.join(dirpath, f)).st_size
    return total


def buffer_kb_for(match: Sequence[str]) -> int:
    """Per-CPU ring buffer size for the files under ``match`` (KiB); the drain thread copies
    pages out while the program runs, so this only has to absorb bursts."""
    if not match:
        return 8 * 1024
    pages = _tree_bytes(match) // 4096
    kb = pages * BUFFER_BYTES_PER_PAGE // 1024
    return max(MIN_BUFFER_KB, min(MAX_BUFFER_KB, kb))


def _event_format(path: Path) -> dict[str, Any]:
    """``id`` and ``fields`` {name: [offset, size, signed]} of one tracepoint's format file."""
    text = path.read_text()
    out: dict[str, Any] = {"fields": {}}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("ID:"):
            out["id"] = int(line.split(":", 1)[1])
        elif line.startswith("field:"):
            parts = dict(p.strip().split(":", 1) for p in line.split(";") if ":" in p and p.strip())
            decl = parts["field"].strip()
            name = decl.split()[-1].split("[")[0]
            out["fields"][name] = [int(parts["offset"]), int(parts["size"]), int(parts["signed"])]
    return out


_SEQ = [0]


class KernelRecorder:
    """One private tracefs instance for one traced run.

    ``start()`` (synchronous, ~30 ms here: the clock switch waits for an RCU grace period),
    then the program runs while a thread copies full pages out, then ``stop()`` writes
    ``TRACE/kernel/`` and ``TRACE/kernel.json`` and ``remove()`` deletes the instance.
    """

    def __init__(
        self,
        trace_dir: Path,
        match: Sequence[str],
        buffer_kb: int | None = None,
        drain: bool = True,
    ) -> None:
        """``buffer_kb``: per-CPU ring buffer (default: sized for the matched files);
        ``drain``: copy pages out while the program runs (False: only at stop, so the
        recorder takes no CPU from the program, and a buffer too small loses events)."""
        self.trace_dir = Path(trace_dir)
        self.match = list(match)
        self.buffer_kb = buffer_kb
        self.drain = drain
        root = tracefs_root()
        if root is None:
            raise KernelUnavailable("tracefs is not mounted")
        self.root = root
        _SEQ[0] += 1
        self.name = f"cmio-{os.getpid()}-{_SEQ[0]}"
        self.inst = root / "instances" / self.name
        self.out = self.trace_dir / KERNEL_DIR
        self.status: dict[str, Any] = {"status": "starting", "instance": self.name}
        self._fds: list[int] = []
        self._files: list[Any] = []
        self._bytes: list[int] = []
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1  # self-pipe: stop() wakes the drain thread
        self._drain: threading.Thread | None = None
        self._lock = threading.Lock()
        self._created = False
        self.started_ns = 0

    # -- setup
    def _write(self, rel: str, value: str) -> None:
        with open(self.inst / rel, "w") as f:
            f.write(value)

    def start(self) -> None:
        """Create and arm the instance; KernelUnavailable (with the reason) on failure."""
        try:
            self._start()
        except KernelUnavailable:
            self.remove()
            raise
        except OSError as e:
            self.remove()
            raise KernelUnavailable(
                f"cannot set up tracefs instance {self.inst}: {e.strerror or e}"
            ) from None

    def _start(self) -> None:
        targets = targets_for(self.match)
        kb = self.buffer_kb or buffer_kb_for(self.match)
        os.mkdir(self.inst)
        self._created = True
        self._write("tracing_on", "0")
        self._write("trace_clock", "mono")
        self._write("buffer_size_kb", str(kb))
        with contextlib.suppress(OSError):
            self._write("options/overwrite", "0")  # keep the start, count what is dropped
        events = [e for e in PAGE_EVENTS if (self.root / "events" / e).is_dir()]
        events += list(TASK_EVENTS)
        if targets.fuse or targets.fuse_all:
            events += [e for e in FUSE_EVENTS if (self.root / "events" / e).is_dir()]
        formats: dict[str, Any] = {}
        for ev in events:
            d = self.inst / "events" / ev
            filt = ""
            if ev in PAGE_EVENTS:
                filt = targets.page_filter()
            elif ev in FUSE_EVENTS and not targets.fuse_all:
                filt = targets.fuse_filter()
            if filt:
                try:
                    self._write(f"events/{ev}/filter", filt)
                except OSError as e:
                    raise KernelUnavailable(f"filter {filt!r} refused for {ev}: {e}") from None
            self._write(f"events/{ev}/enable", "1")
            formats[ev.split("/")[1]] = _event_format(d / "format")
        subbuf = 4096
        with contextlib.suppress(OSError, ValueError):
            subbuf = int((self.inst / "buffer_subbuf_size_kb").read_text()) * 1024
        header = (self.root / "events" / "header_page").read_text()
        ncpu = os.cpu_count() or 1
        self.out.mkdir(exist_ok=True)
        meta = {
            "clock": "mono",
            "subbuf_bytes": subbuf,
            "header_page": header,
            "events": formats,
            "cpus": ncpu,
        }
        import json

        (self.out / "formats.json").write_text(json.dumps(meta, indent=1))
        for cpu in range(ncpu):
            p = self.inst / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw"
            if not p.exists():
                continue
            self._fds.append(os.open(p, os.O_RDONLY | os.O_NONBLOCK))
            self._files.append(open(self.out / f"cpu{cpu}.raw", "wb"))  # noqa: SIM115
            self._bytes.append(0)
        self.status.update(
            {
                "status": "recording",
                "clock": "mono",
                "buffer_kb_per_cpu": kb,
                "events": [e.replace("/", ":") for e in events],
                "filters": {
                    "page": targets.page_filter() or None,
                    "fuse": None if targets.fuse_all else (targets.fuse_filter() or None),
                },
                "match": self.match,
                "fuse_mounts": {str(k): v for k, v in targets.fuse_mounts.items()},
            }
        )
        self.started_ns = time.monotonic_ns()
        self._write("tracing_on", "1")
        if self.drain:
            self._wake_r, self._wake_w = os.pipe()
            self._drain = threading.Thread(target=self._drain_loop, name="cmio-kernel", daemon=True)
            self._drain.start()

    # -- draining
    def _read_all(self) -> None:
        with self._lock:
            for i, fd in enumerate(self._fds):
                while True:
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    if not chunk:
                        break
                    self._files[i].write(chunk)
                    self._bytes[i] += len(chunk)

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([*self._fds, self._wake_r], [], [], 1.0)
            except (OSError, ValueError):
                return
            if any(fd != self._wake_r for fd in ready):
                self._read_all()

    # -- teardown
    def stop(self, root_pid: int | None = None, extra: dict[str, Any] | None = None) -> None:
        """Stop recording, copy what is left, write ``kernel.json``; the instance stays
        until :meth:`remove`."""
        if self.status.get("status") != "recording":
            return
        stopped = time.monotonic_ns()
        with contextlib.suppress(OSError):
            self._write("tracing_on", "0")
        self._stop.set()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._drain is not None:
            self._drain.join()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._read_all()
        per_cpu = []
        lost = 0
        for cpu in range(len(self._fds)):
            stats = self._stats(cpu)
            stats["cpu"] = cpu
            stats["raw_bytes"] = self._bytes[cpu]
            per_cpu.append(stats)
            lost += (
                stats.get("dropped events", 0)
                + stats.get("overrun", 0)
                + stats.get("commit overrun", 0)
            )
        for f in self._files:
            f.close()
        for fd in self._fds:
            os.close(fd)
        self._files, self._fds = [], []
        self.status.update(
            {
                "status": "recorded",
                "start_ns": self.started_ns,
                "stop_ns": stopped,
                "root_pid": root_pid,
                "lost_events": lost,
                "per_cpu": per_cpu,
            }
        )
        if extra:
            self.status.update(extra)
        write_status(self.trace_dir, self.status)

    def _stats(self, cpu: int) -> dict[str, int]:
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (self.inst / "per_cpu" / f"cpu{cpu}" / "stats").read_text().splitlines():
                k, _, v = line.partition(":")
                with contextlib.suppress(ValueError):
                    out[k.strip()] = int(v.strip())
        return out

    def remove(self, background: bool = False) -> None:
        """Delete the instance (its ring buffers).  The kernel waits for an RCU grace period
        (~35 ms here); ``background`` leaves that wait to a short-lived ``rmdir`` process."""
        for f in self._files:
            f.close()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files, self._fds = [], []
        if not self._created:
            return
        self._created = False
        with contextlib.suppress(OSError):
            self._write("tracing_on", "0")
        if background:
            # posix_spawn, not subprocess (5 ms of imports); the rmdir outlives us briefly,
            # in a session of its own, and is reaped by init.
            with contextlib.suppress(OSError):
                os.posix_spawnp("rmdir", ["rmdir", str(self.inst)], os.environ, setsid=True)
                return
        for _ in range(50):
            try:
                os.rmdir(self.inst)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)  # EBUSY while a reader closes


def write_status(trace_dir: Path, status: dict[str, Any]) -> None:
    """``TRACE/kernel.json``, atomically."""
    import json

    dest = Path(trace_dir) / STATUS_FILE
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(status, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, dest)


def read_status(trace_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``kernel.json`` of a trace directory, or None if it has none."""
    import json

    p = Path(trace_dir) / STATUS_FILE
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError):
        return {"status": "damaged", "reason": f"{p}: not valid JSON"}
    return doc if isinstance(doc, dict) else {"status": "damaged", "reason": f"{p}: not an object"}


def status_line(status: dict[str, Any] | None) -> str:
    """One line for people: were kernel tracepoints recorded, and was any event lost.

    ``status`` is ``kernel.json`` (:func:`read_status`) or, better, ``read_trace(...).meta
    ["kernel"]``, which adds the pages the kernel flagged with missed events."""
    if status is None:
        return "not recorded"
    s = status.get("status")
    if s == "recorded":
        lost = int(status.get("lost_events", 0))
        missed = int(status.get("missed_pages", 0))
        gate = ""
        if status.get("gate_timeout"):
            gate = "; the program stopped waiting for the set-up: early events may be missing"
        if lost or missed:
            return (
                f"recorded, but events were LOST: {lost} dropped/overrun, {missed} buffer "
                f"pages with missed events (ring buffer full){gate}"
            )
        return f"recorded, none lost (buffer {status.get('buffer_kb_per_cpu')} KiB/CPU){gate}"
    return f"{s}: {status.get('reason', '')}".rstrip(": ")
