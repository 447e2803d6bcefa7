"""`sim mount` refuses what cannot work, before any work, in one line (issue 8 item 5).

Real mounts, real sockets: a second client on a locked cache, a server that accepts and
never answers, one whose listen queue is full (never accepts), and unusable paths (parent is
a file, a read-only file system, inside the mount point, on an emulated CVMFS mount).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.mount import (
    FSTYPE,
    MountOptions,
    SimMount,
    cache_holder,
    mount_type,
    simfs_binary,
)
from cvmfs_modelio.sim.publish import PublishParams
from tests.sim.simfs_support import publish_tree, served

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("checks")
    store = publish_tree({"a.txt": b"hello\n"}, base / "src", base / "store", PublishParams())
    with served(store) as srv:
        yield srv


def _cli(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "cvmfs_modelio.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return r, time.monotonic() - t0


def _no_client_left(mp: Path) -> None:
    assert mount_type(mp) is None
    r = subprocess.run(["pgrep", "-f", f"cmio-simfs .* {mp} "], capture_output=True, check=False)
    assert r.stdout == b""


# ---------------------------------------------------------------- the cache lock


def test_second_mount_on_one_cache_is_refused(tmp_path: Path, server: Any) -> None:
    cache = tmp_path / "cache"
    (tmp_path / "m1").mkdir()
    (tmp_path / "m2").mkdir()
    with SimMount(server.url, tmp_path / "m1", MountOptions(cache=cache)) as m1:
        assert cache_holder(cache) == m1.pid
        r, _ = _cli("sim", "mount", server.url, str(tmp_path / "m2"), "--cache", str(cache))
        assert r.returncode == 2
        assert r.stderr == (
            f"cvmfs-modelio: {cache}: cache directory is in use by another mount "
            f"(cmio-simfs pid {m1.pid})\n"
        )
        _no_client_left(tmp_path / "m2")
        # The client itself holds the lock, whoever starts it (no Python pre-check here).
        r2 = subprocess.run(
            [str(simfs_binary()), server.url, str(tmp_path / "m2"), "--cache", str(cache)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r2.returncode == 2
        assert r2.stderr == (
            f"cmio-simfs: {cache}: cache directory is in use by another cmio-simfs (pid {m1.pid})\n"
        )
        assert mount_type(tmp_path / "m2") is None
        assert (m1.path / "a.txt").read_bytes() == b"hello\n"  # the first one is untouched
    # Released with the client: the cache can be mounted again.
    assert cache_holder(cache) is None
    with SimMount(server.url, tmp_path / "m2", MountOptions(cache=cache)) as m2:
        assert (m2.path / "a.txt").read_bytes() == b"hello\n"


def test_a_killed_client_releases_the_cache(tmp_path: Path, server: Any) -> None:
    cache = tmp_path / "cache"
    (tmp_path / "m").mkdir()
    m = SimMount(server.url, tmp_path / "m", MountOptions(cache=cache))
    m.start()
    try:
        assert m.proc is not None
        m.proc.kill()
        m.proc.wait()
        assert cache_holder(cache) is None  # the kernel dropped the flock with the process
    finally:
        m.stop()
    with SimMount(server.url, tmp_path / "m", MountOptions(cache=cache)) as again:
        assert (again.path / "a.txt").read_bytes() == b"hello\n"


# ---------------------------------------------------------------- unresponsive servers


@contextlib.contextmanager
def _silent_server() -> Iterator[str]:
    """Accepts every connection, reads the request, never answers."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    stop = threading.Event()
    held: list[socket.socket] = []

    def loop() -> None:
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(c)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{ls.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        ls.close()


@contextlib.contextmanager
def _full_backlog_server() -> Iterator[str]:
    """Listens but never accepts, its accept queue full: a connect never completes."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    addr = ls.getsockname()
    fillers = []
    try:
        for _ in range(4):  # fill the queue; further SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(addr)
            fillers.append(s)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(0.5)
        with pytest.raises(OSError):
            probe.connect(addr)
        probe.close()
        yield f"http://127.0.0.1:{addr[1]}"
    finally:
        for s in fillers:
            s.close()
        ls.close()


@pytest.mark.parametrize("kind", ["accepts_never_answers", "never_accepts"])
def test_unresponsive_server_gives_up_at_timeout_times_attempts(tmp_path: Path, kind: str) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    timeout_s, retries = 2, 1
    ctx = _silent_server() if kind == "accepts_never_answers" else _full_backlog_server()
    with ctx as url:
        r, elapsed = _cli(
            "sim",
            "mount",
            url,
            str(mp),
            "--cache",
            str(tmp_path / "c"),
            "--timeout-direct",
            str(timeout_s),
            "--retries",
            str(retries),
        )
    attempts = retries + 1
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    # What it waits for, once, then one line saying why it gave up.
    assert lines[0] == (
        f"{mp}: waiting for {url}/.cvmfspublished and the root catalog "
        f"(gives up after {attempts} x {timeout_s} s per request, the direct timeout)"
    )
    assert len(lines) == 2
    assert lines[1].startswith(f"cvmfs-modelio: {mp}: mount failed: {url}/.cvmfspublished: ")
    assert f"no answer within {timeout_s} s" in lines[1]
    assert lines[1].endswith(f"gave up after {attempts} attempts")
    # libcurl checks a stalled transfer once a second: each attempt ends within ~1 s of
    # the timeout; nothing waits for the 60 s of old.
    assert attempts * timeout_s - 0.5 <= elapsed <= attempts * (timeout_s + 1.5) + 3, elapsed
    _no_client_left(mp)


def test_give_up_time_is_timeout_times_attempts() -> None:
    direct = MountOptions(timeout_s=5.0, timeout_direct_s=10.0, retries=1)
    assert (direct.effective_timeout_s, direct.attempts, direct.give_up_s) == (10.0, 2, 20.0)
    proxied = MountOptions(proxy="http://127.0.0.1:3128", retries=2)
    assert (proxied.effective_timeout_s, proxied.give_up_s) == (5.0, 15.0)


# ---------------------------------------------------------------- unusable paths


@pytest.fixture
def ro_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs: unwritable even for root."""
    d = tmp_path / "ro"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_unusable_paths_are_one_line_before_any_work(
    tmp_path: Path, server: Any, ro_dir: Path
) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (
            ["--cache", f"{a_file}/x"],
            f"{a_file}/x: cache directory cannot be created: {a_file} is not a directory",
        ),
        (["--cache", str(a_file)], f"{a_file}: cache directory is not a directory"),
        (["--cache", f"{ro_dir}/c"], f"{ro_dir}/c: cache directory is not writable ({ro_dir})"),
        (["--cache", f"{mp}/c"], f"{mp}/c: cache directory is inside the mount point {mp}"),
        (
            ["--cache", str(tmp_path / "c"), "--log", f"{a_file}/log.evt"],
            f"{a_file}: log file's directory is not a directory",
        ),
        (
            ["--cache", str(tmp_path / "c"), "--log", f"{ro_dir}/log.evt"],
            f"{ro_dir}: log file's directory is not writable ({ro_dir})",
        ),
        (
            ["--cache", str(tmp_path / "c"), "--log", str(tmp_path)],
            f"{tmp_path}: log file is a directory",
        ),
    ]
    for extra, message in cases:
        r, _ = _cli("sim", "mount", server.url, str(mp), *extra)
        assert r.returncode == 2, (extra, r.stderr)
        assert r.stderr == f"cvmfs-modelio: {message}\n", extra
        _no_client_left(mp)
    assert not (tmp_path / "c").exists()  # nothing was started, nothing was created
    r, _ = _cli("sim", "mount", server.url, str(tmp_path / "nope"), "--cache", str(tmp_path / "c"))
    assert (r.returncode, r.stderr) == (
        2,
        f"cvmfs-modelio: {tmp_path / 'nope'}: mount point does not exist\n",
    )


def test_cache_on_an_emulated_mount_is_refused(tmp_path: Path, server: Any) -> None:
    (tmp_path / "m1").mkdir()
    (tmp_path / "m2").mkdir()
    with SimMount(server.url, tmp_path / "m1", MountOptions(cache=tmp_path / "c1")) as m1:
        assert mount_type(m1.path) == FSTYPE
        bad = m1.path / "sub" / "cache"
        with pytest.raises(UsageError) as e:
            SimMount(server.url, tmp_path / "m2", MountOptions(cache=bad)).start()
        assert (
            str(e.value)
            == f"{bad}: cache directory is on the CVMFS mount {m1.path} (read-only, under test)"
        )
        assert mount_type(tmp_path / "m2") is None


def test_bad_profile_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    r, _ = _cli("sim", "mount", "http://127.0.0.1:1", str(tmp_path / "m"), "--client-profile", "x")
    assert r.returncode == 2 and "--client-profile" in r.stderr and "cvmfs-2.12" in r.stderr
    with pytest.raises(
        UsageError, match=re.escape("--client-profile: 'x' is not one of cvmfs-2.12, fast")
    ):
        MountOptions(client_profile="x").validate()
    with pytest.raises(UsageError, match="--cost-per-object-us"):
        MountOptions(cost_per_object_us=-1.0).validate()
