"""Process control of the emulated CVMFS client ``cmio-simfs`` (a FUSE mount).

:class:`SimMount` starts the client on a mount point and always unmounts it again;
:func:`umount` and :func:`clear_stale` deal with a mount whose client died (SIGKILL
leaves "Transport endpoint is not connected" behind); :func:`wipe_cache` empties a
client cache directory.  With a round-trip time or a bandwidth limit the user-space
network emulator (``cvmfs_modelio.sim.netem``) sits between the client and the store.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import cvmfs_modelio
from cvmfs_modelio.core.errors import UsageError

FSTYPE = "fuse.cmio-simfs"
CACHE_MARKER = ".cmio-simfs-cache"
CACHE_LOCK = "lock"
COUNTERS_XATTR = "user.cmio_counters"
PROFILE_XATTR = "user.cmio_client_profile"
CLIENT_PROFILES = ("cvmfs-2.12", "fast")
DEFAULT_PROFILE = "cvmfs-2.12"
# Besides the network waits (see MountOptions.give_up_s): starting the process, mounting.
READY_SLACK_S = 30.0
STOP_TIMEOUT_S = 15.0
WAIT_NOTICE_S = 2.0


def simfs_binary() -> Path:
    """The installed ``cmio-simfs`` executable (inside the package directory)."""
    exe = Path(cvmfs_modelio.__file__).resolve().parent / "bin" / "cmio-simfs"
    if not os.access(exe, os.X_OK):
        raise UsageError(f"{exe}: the FUSE client is not installed (rebuild the package)")
    return exe


def default_cache_dir() -> Path:
    """Client cache shared by all mounts of this user: ``$XDG_CACHE_HOME/cvmfs-modelio/simfs``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "cvmfs-modelio" / "simfs"


@dataclass(frozen=True)
class MountOptions:
    """How the client runs.  Times in seconds (``rtt_ms`` in ms), bandwidth in bytes/s.

    ``timeout_s`` / ``timeout_direct_s`` are cvmfs2's CVMFS_TIMEOUT (used through a
    proxy) and CVMFS_TIMEOUT_DIRECT (without one): the connect timeout and the stall
    limit of every request, each tried ``retries + 1`` times.  ``client_profile``:
    ``cvmfs-2.12`` (what the real client pays per object, the default) or ``fast``
    (docs/simfs.md); ``cost_per_object_us`` / ``cost_per_mib_us`` override the profile's
    calibrated residual (None: the profile's own).
    """

    cache: Path | None = None
    rtt_ms: float = 0.0
    bandwidth: int = 0
    parallel: int = 16
    prefetch: int = 0
    timeout_s: float = 5.0
    timeout_direct_s: float = 10.0
    retries: int = 1
    log: Path | None = None
    proxy: str | None = None
    client_profile: str = DEFAULT_PROFILE
    cost_per_object_us: float | None = None
    cost_per_mib_us: float | None = None
    prefetch_filebundles: bool = False  # CVMFS_PREFETCH_FILEBUNDLES, off by default
    bundle_pool_size: int = 8  # CVMFS_BUNDLE_POOL_SIZE (upstream default)

    def validate(self) -> None:
        if self.rtt_ms < 0:
            raise UsageError(f"--rtt-ms: {self.rtt_ms} is negative")
        if self.bandwidth < 0:
            raise UsageError(f"--bandwidth: {self.bandwidth} is negative")
        if not 1 <= self.parallel <= 1024:
            raise UsageError(f"--parallel: {self.parallel} is not in [1, 1024]")
        if not 0 <= self.prefetch <= 1024:
            raise UsageError(f"--prefetch: {self.prefetch} is not in [0, 1024]")
        if not 0 < self.timeout_s <= 3600:
            raise UsageError(f"--timeout: {self.timeout_s} s is not in (0, 3600]")
        if not 0 < self.timeout_direct_s <= 3600:
            raise UsageError(f"--timeout-direct: {self.timeout_direct_s} s is not in (0, 3600]")
        if not 0 <= self.retries <= 100:
            raise UsageError(f"--retries: {self.retries} is not in [0, 100]")
        if not 1 <= self.bundle_pool_size <= 256:
            raise UsageError(f"--bundle-pool-size: {self.bundle_pool_size} is not in [1, 256]")
        if self.client_profile not in CLIENT_PROFILES:
            raise UsageError(
                f"--client-profile: {self.client_profile!r} is not one of "
                f"{', '.join(CLIENT_PROFILES)}"
            )
        for flag, v in (
            ("--cost-per-object-us", self.cost_per_object_us),
            ("--cost-per-mib-us", self.cost_per_mib_us),
        ):
            if v is not None and not 0 <= v <= 1e7:
                raise UsageError(f"{flag}: {v} us is not in [0, 1e7]")

    @property
    def netem(self) -> bool:
        return self.rtt_ms > 0 or self.bandwidth > 0

    @property
    def effective_timeout_s(self) -> float:
        """The timeout the client applies: the proxy one with a proxy, else the direct one."""
        return self.timeout_s if self.proxy else self.timeout_direct_s

    @property
    def attempts(self) -> int:
        return self.retries + 1

    @property
    def give_up_s(self) -> float:
        """Longest wait for one unresponsive request: timeout x attempts."""
        return self.effective_timeout_s * self.attempts


# ------------------------------------------------------------------ mount table


def unescape_mount_field(field: str) -> str:
    """A path field of /proc/mounts or /proc/self/mountinfo with the kernel's \\ooo undone."""
    return _unescape(field)


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, source) of every mount, in mount order."""
    rows = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if len(lf) >= 5 and len(rf) >= 2:
            rows.append((_unescape(lf[4]), rf[0], _unescape(rf[1])))
    return rows


def mount_type(mountpoint: str | os.PathLike[str]) -> str | None:
    """File system type mounted exactly at ``mountpoint`` (the top one), or None."""
    target = os.path.abspath(os.fspath(mountpoint))
    found = None
    for mp, fstype, _src in mounts():
        if mp == target:
            found = fstype
    return found


def is_stale(mountpoint: str | os.PathLike[str]) -> bool:
    """True if a FUSE mount is left at ``mountpoint`` without its client (ENOTCONN)."""
    # stat() may be answered from the kernel's attribute cache; opendir always reaches
    # the client, so a dead one shows up as ENOTCONN.
    try:
        os.stat(mountpoint)
        with os.scandir(mountpoint):
            pass
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def _lazy_unmount(mountpoint: str) -> None:
    for argv in (["fusermount3", "-u", "-z", mountpoint], ["umount", "-l", mountpoint]):
        if shutil.which(argv[0]) is None:
            continue
        r = subprocess.run(argv, capture_output=True, text=True, check=False)
        if r.returncode == 0:
            return
    if mount_type(mountpoint) is not None:
        raise UsageError(f"{mountpoint}: cannot unmount the stale mount")


def clear_stale(mountpoint: str | os.PathLike[str]) -> bool:
    """Unmount a dead client's mount at ``mountpoint``; True if there was one."""
    mp = os.path.abspath(os.fspath(mountpoint))
    if mount_type(mp) is None or not is_stale(mp):
        return False
    _lazy_unmount(mp)
    return True


def _client_pid(mountpoint: str) -> int | None:
    try:
        return int(os.getxattr(mountpoint, "user.pid"))
    except (OSError, ValueError):
        return None


def _wait_unmounted(mountpoint: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if mount_type(mountpoint) != FSTYPE:
            return True
        time.sleep(0.02)
    return False


def _wait_exited(pid: int, timeout_s: float) -> bool:
    """True once process ``pid`` (not necessarily our child) has exited or is a zombie."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return True
        # the state follows the parenthesised command name, which may itself hold ')'
        if stat[stat.rindex(")") + 2 :].startswith("Z"):
            return True
        time.sleep(0.02)
    return False


def umount(mountpoint: str | os.PathLike[str]) -> None:
    """Unmount an emulated-CVMFS mount: ask its client to stop, else detach it (stale).

    Returns once the client process has exited, not only once the mount is gone: the client
    writes its event log (``--log``) and its last counters on the way out, so a caller that
    reads the log, or removes the directory holding it, right after this call sees it whole.
    """
    mp = os.path.abspath(os.fspath(mountpoint))
    fstype = mount_type(mp)
    if fstype is None:
        raise UsageError(f"{mp}: not mounted")
    if fstype != FSTYPE:
        raise UsageError(f"{mp}: not an emulated CVMFS mount (file system {fstype})")
    if is_stale(mp):
        _lazy_unmount(mp)
        return
    pid = _client_pid(mp)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None
    if pid is not None and _wait_unmounted(mp, STOP_TIMEOUT_S):
        _wait_exited(pid, STOP_TIMEOUT_S)
        return
    _lazy_unmount(mp)


# ------------------------------------------------------------------ cache


def wipe_cache(cache: str | os.PathLike[str]) -> int:
    """Remove every cached object under ``cache`` (a cmio-simfs cache); returns files removed."""
    root = Path(cache)
    if not root.is_dir():
        raise UsageError(f"{root}: no such cache directory")
    if not (root / CACHE_MARKER).exists():
        raise UsageError(f"{root}: not a cmio-simfs cache (no {CACHE_MARKER}); refusing to wipe")
    removed = 0
    for sub in root.iterdir():
        name = sub.name
        if sub.is_dir() and (name == "txn" or (len(name) == 2 and _is_hex(name))):
            for f in sub.iterdir():
                try:
                    f.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)


# ------------------------------------------------------------------ counters


def parse_counters(text: str) -> dict[str, int]:
    """``name|value|description`` lines (``cvmfs_talk internal affairs``) -> {name: value}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 2:
            try:
                out[parts[0].strip()] = int(parts[1])
            except ValueError:
                continue
    return out


def read_counters(mountpoint: str | os.PathLike[str]) -> dict[str, int]:
    """The client's counters (real-client names: ``cvmfs.n_fs_open``, ``fetch.n_downloads``...)."""
    try:
        raw = os.getxattr(os.fspath(mountpoint), COUNTERS_XATTR)
    except OSError as e:
        raise UsageError(f"{mountpoint}: cannot read counters: {e.strerror}") from None
    return parse_counters(raw.decode())


# ------------------------------------------------------------------ the mount


def _with_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))


class NetemChild:
    """``NetemProxy`` in a child process of its own.

    Out of process on purpose: a reader of the mount that holds the GIL while the kernel
    waits for the FUSE client (an mmap page fault, a C extension reading a file) would
    stall an in-process proxy, which needs the GIL to forward the bytes.
    """

    def __init__(self, host: str, port: int, rtt_ms: float, bandwidth: int) -> None:
        argv = [sys.executable, "-m", "cvmfs_modelio.sim.mount", "--netem", host, str(port)]
        argv += [repr(float(rtt_ms)), str(int(bandwidth))]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.isdigit():
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            self.stop()
            lines = [ln for ln in err.splitlines() if ln.strip()]
            raise UsageError(f"network emulator failed: {lines[-1] if lines else 'no port'}")
        self.port = int(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def _start_netem(url: str, opts: MountOptions) -> tuple[NetemChild, str]:
    """Start the user-space network emulator in front of ``url``; (emulator, new URL)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise UsageError(f"{url}: no host in URL")
    child = NetemChild(parts.hostname, parts.port or 80, opts.rtt_ms, opts.bandwidth)
    return child, _with_port(url, "127.0.0.1", child.port)


def _netem_main(argv: list[str]) -> int:
    """Child side of NetemChild: print the listening port, forward until stdin closes."""
    from cvmfs_modelio.sim.netem import NetemProxy

    host, port, rtt, bw = argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with NetemProxy(host, int(port), float(rtt), float(bw)) as proxy:
        sys.stdout.write(f"{proxy.port}\n")
        sys.stdout.flush()
        sys.stdin.read()
    return 0


class SimMount:
    """A running ``cmio-simfs`` mount; a context manager that always unmounts.

    >>> with SimMount("http://127.0.0.1:8080", "/tmp/mnt") as m:   # doctest: +SKIP
    ...     data = (m.path / "model.onnx").read_bytes()

    ``progress``: called with one line when the client is slow to come up (what it is
    waiting for, and when it will give up).
    """

    def __init__(
        self,
        url: str,
        mountpoint: str | os.PathLike[str],
        options: MountOptions | None = None,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.path = Path(os.path.abspath(os.fspath(mountpoint)))
        self.options = options or MountOptions()
        self.options.validate()
        self.cache = Path(self.options.cache or default_cache_dir())
        self.progress = progress
        self.proc: subprocess.Popen[bytes] | None = None
        self._netem: NetemChild | None = None

    @property
    def client_profile(self) -> str:
        """The client profile this mount runs with (``cvmfs-2.12`` or ``fast``)."""
        return self.options.client_profile

    # -- lifecycle
    def __enter__(self) -> SimMount:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def argv(self, url: str) -> list[str]:
        """The client's command line."""
        o = self.options
        argv = [str(simfs_binary()), url, str(self.path), "--cache", str(self.cache)]
        argv += ["--parallel", str(o.parallel), "--prefetch", str(o.prefetch)]
        argv += ["--timeout", repr(float(o.timeout_s))]
        argv += ["--timeout-direct", repr(float(o.timeout_direct_s)), "--retries", str(o.retries)]
        argv += ["--client-profile", o.client_profile]
        if o.cost_per_object_us is not None:
            argv += ["--cost-per-object-us", repr(float(o.cost_per_object_us))]
        if o.cost_per_mib_us is not None:
            argv += ["--cost-per-mib-us", repr(float(o.cost_per_mib_us))]
        if o.prefetch_filebundles:
            argv += ["--prefetch-filebundles", "--bundle-pool-size", str(o.bundle_pool_size)]
        if o.proxy:
            argv += ["--proxy", o.proxy]
        if o.log is not None:
            argv += ["--log", str(Path(o.log).resolve())]
        return argv

    def check(self) -> None:
        """Every argument usable, before any work: URL, mount point, cache, log, cache lock."""
        check_mount_paths(self.url, self.path, self.cache, self.options.log)

    def waiting_message(self) -> str:
        o = self.options
        what = f"{self.url}/.cvmfspublished and the root catalog"
        if o.proxy:
            what += f" through the proxy {o.proxy}"
        kind = "proxy" if o.proxy else "direct"
        return (
            f"{self.path}: waiting for {what} (gives up after {o.attempts} x "
            f"{o.effective_timeout_s:g} s per request, the {kind} timeout)"
        )

    def ready_timeout_s(self) -> float:
        """How long start() waits at most: manifest and catalog each up to timeout x attempts."""
        return 2 * self.options.give_up_s + READY_SLACK_S

    def start(self, detach: bool = False) -> None:
        """Mount; returns when the mount serves requests.  UsageError (one line) on failure."""
        self.check()
        prepare_mountpoint(self.path)
        self.cache.mkdir(parents=True, exist_ok=True)
        url = self.url
        if self.options.netem:
            self._netem, url = _start_netem(self.url, self.options)
        try:
            self.proc = _spawn_ready(
                self.argv(url),
                detach=detach,
                where=str(self.path),
                timeout_s=self.ready_timeout_s(),
                on_slow=self._on_slow,
            )
        except BaseException:
            self._stop_netem()
            raise

    def _on_slow(self) -> None:
        if self.progress is not None:
            self.progress(self.waiting_message())

    def stop(self) -> None:
        """Unmount (SIGTERM to the client; lazy unmount if it does not go) and reap it."""
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc is not None and mount_type(self.path) == FSTYPE:
                _lazy_unmount(str(self.path))
        finally:
            self._stop_netem()

    def _stop_netem(self) -> None:
        nt, self._netem = self._netem, None
        if nt is not None:
            nt.stop()

    # -- introspection and control
    @property
    def pid(self) -> int:
        if self.proc is None:
            raise UsageError(f"{self.path}: not mounted")
        return self.proc.pid

    def counters(self) -> dict[str, int]:
        """Counters under the real client's names (see ``read_counters``)."""
        return read_counters(self.path)

    def cleanup(self, timeout_s: float = 30.0) -> None:
        """Empty the client cache and drop the kernel page cache of every file."""
        cleanup_mount(self.path, timeout_s)


def read_client_profile(mountpoint: str | os.PathLike[str]) -> str:
    """The client profile a running emulated mount reports (``user.cmio_client_profile``)."""
    try:
        return os.getxattr(os.fspath(mountpoint), PROFILE_XATTR).decode()
    except OSError as e:
        raise UsageError(f"{mountpoint}: cannot read the client profile: {e.strerror}") from None


# ------------------------------------------------------------------ argument checks


def _cvmfs_mount_of(path: str) -> str | None:
    """The CVMFS mount (emulated or real) holding ``path``, or None."""
    best = None
    for mp, fstype, source in mounts():
        inside = path == mp or path.startswith(mp.rstrip("/") + "/")
        real = fstype in ("fuse", "fuse.cvmfs2") and source.startswith("cvmfs2")
        if inside and (fstype == FSTYPE or real) and (best is None or len(mp) > len(best)):
            best = mp
    return best


def check_writable_dir(path: Path, what: str, mountpoint: Path | None = None) -> None:
    """UsageError unless ``path`` is (or can be made) a writable directory off the tested mount.

    Checks the nearest existing ancestor, so ``a_file/x`` (parent is a file), an unwritable
    parent and a path on a (read-only) CVMFS mount are all one line before any work.
    """
    p = os.path.realpath(os.fspath(path))
    if mountpoint is not None:
        mp = os.path.realpath(os.fspath(mountpoint))
        if p == mp or p.startswith(mp.rstrip("/") + "/"):
            raise UsageError(f"{path}: {what} is inside the mount point {mountpoint}")
    on = _cvmfs_mount_of(p)
    if on is not None:
        raise UsageError(f"{path}: {what} is on the CVMFS mount {on} (read-only, under test)")
    q = p
    while not os.path.lexists(q):
        q = os.path.dirname(q)
    if not os.path.isdir(q):
        if q == p:
            raise UsageError(f"{path}: {what} is not a directory")
        raise UsageError(f"{path}: {what} cannot be created: {q} is not a directory")
    if not os.access(q, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: {what} is not writable ({q})")


def check_writable_file(path: Path, what: str, mountpoint: Path | None = None) -> None:
    """UsageError unless the file ``path`` can be written (its directory as above)."""
    if os.path.isdir(path):
        raise UsageError(f"{path}: {what} is a directory")
    check_writable_dir(
        Path(os.path.dirname(os.path.abspath(path))), f"{what}'s directory", mountpoint
    )
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{path}: {what} is not writable")


def cache_holder(cache: Path) -> int | None:
    """Pid of the client holding ``cache``'s lock (-1 if unreadable), or None if it is free."""
    try:
        fd = os.open(cache / CACHE_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_mount_paths(url: str, mountpoint: Path, cache: Path, log: Path | None) -> None:
    """One-line UsageError for the first unusable argument of a mount (nothing is started)."""
    _check_url(url)
    mp = Path(os.path.abspath(mountpoint))
    fstype = mount_type(mp)
    if not os.path.lexists(mp) and fstype is None:  # a stale mount fails lstat
        raise UsageError(f"{mountpoint}: mount point does not exist")
    if fstype == FSTYPE and not is_stale(mp):
        raise UsageError(f"{mp}: already mounted (client pid {_client_pid(str(mp))})")
    check_writable_dir(cache, "cache directory", mp)
    if log is not None:
        check_writable_file(Path(log), "log file", mp)
    holder = cache_holder(Path(cache))
    if holder is not None:
        who = f"cmio-simfs pid {holder}" if holder > 0 else "another cmio-simfs"
        raise UsageError(f"{cache}: cache directory is in use by another mount ({who})")


def cleanup_mount(mountpoint: str | os.PathLike[str], timeout_s: float = 30.0) -> None:
    """Ask a running client (found by its ``user.pid``) to empty its cache (SIGUSR1)."""
    mp = os.fspath(mountpoint)
    pid = _client_pid(mp)
    if pid is None:
        raise UsageError(f"{mp}: not an emulated CVMFS mount")
    before = read_counters(mp).get("cmio.n_cleanups", 0)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout_s
    while read_counters(mp).get("cmio.n_cleanups", 0) <= before:
        if time.monotonic() > deadline:
            raise UsageError(f"{mp}: the client did not confirm the cache cleanup")
        time.sleep(0.005)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"{url}: not an http:// URL")


def prepare_mountpoint(path: Path) -> None:
    """Check ``path`` can take a mount; clear a dead client's stale mount there first."""
    clear_stale(path)
    fstype = mount_type(path)
    if fstype == FSTYPE:
        raise UsageError(f"{path}: already mounted (client pid {_client_pid(str(path))})")
    if not path.is_dir():
        raise UsageError(f"{path}: mount point is not a directory")


def _spawn_ready(
    argv: list[str],
    *,
    detach: bool,
    where: str,
    timeout_s: float,
    on_slow: Callable[[], None] | None = None,
    extra_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with a ready pipe appended; wait until it says ``ready``."""
    # stderr goes to an unlinked file: the client may write to it for its whole life.
    with tempfile.TemporaryFile() as err:
        rfd, wfd = os.pipe()
        try:
            proc = subprocess.Popen(
                [*argv, "--ready-fd", str(wfd)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(wfd, *extra_fds),
                start_new_session=detach,
            )
        except OSError as e:
            os.close(rfd)
            raise UsageError(f"{argv[0]}: cannot start: {e.strerror}") from None
        finally:
            os.close(wfd)
        try:
            ok = _read_ready(rfd, proc, timeout_s, on_slow)
        finally:
            os.close(rfd)
        if ok:
            return proc
        timed_out = proc.poll() is None
        if timed_out:
            proc.kill()
        proc.wait()
        err.seek(0)
        lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
    if lines:
        msg = lines[-1].removeprefix("cmio-simfs: ").removeprefix("cvmfs-modelio: ")
        if msg.startswith(f"{where}: "):
            raise UsageError(msg)  # already names the mount point (the detached wrapper)
    elif timed_out:
        msg = f"the client was not ready after {timeout_s:g} s"
    else:
        msg = f"client exited with status {proc.returncode}"
    raise UsageError(f"{where}: mount failed: {msg}")


def _read_ready(
    fd: int,
    proc: subprocess.Popen[bytes],
    timeout_s: float,
    on_slow: Callable[[], None] | None = None,
) -> bool:
    start = time.monotonic()
    deadline = start + timeout_s
    noticed = on_slow is None
    buf = b""
    while time.monotonic() < deadline:
        if not noticed and time.monotonic() - start >= WAIT_NOTICE_S:
            noticed = True
            assert on_slow is not None
            on_slow()
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 64)
            if not chunk:
                return b"ready" in buf
            buf += chunk
            if b"ready" in buf:
                return True
        elif proc.poll() is not None:
            return False
    return False


def serve_foreground(mount: SimMount, ready_fd: int | None, on_ready: Callable[[], None]) -> int:
    """Run the mount until the client exits (SIGINT/SIGTERM are passed on); its status."""
    stop = {"sig": 0}

    def forward(signum: int, _frame: object) -> None:
        stop["sig"] = signum
        if mount.proc is not None and mount.proc.poll() is None:
            mount.proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        mount.start()
        on_ready()
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        assert mount.proc is not None
        rc = mount.proc.wait()
        return 0 if stop["sig"] else rc
    finally:
        mount.stop()
        for s, h in old.items():
            signal.signal(s, h)


def spawn_detached_wrapper(argv_tail: list[str], mount: SimMount) -> None:
    """Re-run ``sim mount`` in the foreground in a new session (keeps netem alive)."""
    argv = [sys.executable, "-m", "cvmfs_modelio.cli", "sim", "mount", *argv_tail, "--foreground"]
    _spawn_ready(
        argv,
        detach=True,
        where=str(mount.path),
        timeout_s=mount.ready_timeout_s() + READY_SLACK_S,
        on_slow=mount._on_slow,
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--netem"]:
    sys.exit(_netem_main(sys.argv[2:]))
