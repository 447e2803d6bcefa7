"""Kernel tracepoints through a private tracefs instance: nothing lost silently, nothing left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.core.events import Op, Source
from cvmfs_modelio.trace import tracefs
from cvmfs_modelio.trace.launch import run_traced
from cvmfs_modelio.trace.tracer import read_trace

pytestmark = pytest.mark.skipif(
    tracefs.unavailable_reason() is not None, reason=str(tracefs.unavailable_reason())
)
CLI = [sys.executable, "-m", "cvmfs_modelio.cli"]


def instances() -> set[str]:
    root = tracefs.tracefs_root()
    assert root is not None
    return {p.name for p in (root / "instances").iterdir() if p.name.startswith("cmio-")}


def cold_file(path: Path, size: int) -> Path:
    path.write_bytes(np.random.Generator(np.random.PCG64(3)).bytes(size))
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    return path


def test_a_full_ring_buffer_is_reported_as_lost_events(tmp_path: Path) -> None:
    f = cold_file(tmp_path / "big.bin", 32 << 20)
    trace = tmp_path / "t"
    trace.mkdir()
    before = instances()
    rec = tracefs.KernelRecorder(trace, [str(f)], buffer_kb=4, drain=False)
    rec.start()
    # Page-cache insertions one page at a time (4 KiB preads, no readahead) overflow a
    # 4 KiB buffer that nobody drains.
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    for off in range(0, 32 << 20, 4096):
        os.pread(fd, 4096, off)
    os.close(fd)
    rec.stop()
    rec.remove()
    assert instances() == before
    log = read_trace(trace) if list(trace.glob("*.cmtr")) else None
    status = tracefs.read_status(trace)
    assert status is not None and status["status"] == "recorded"
    assert status["lost_events"] > 0
    line = tracefs.status_line(status)
    assert "LOST" in line and f"{status['lost_events']} dropped/overrun" in line
    assert log is None  # no tracer stream: the kernel status alone tells the loss


def test_trace_info_reports_lost_kernel_events(tmp_path: Path) -> None:
    f = cold_file(tmp_path / "f.bin", 8 << 20)
    trace = tmp_path / "t"
    rc = run_traced(["cat", str(f)], trace, match=[str(f)], kernel="on", background_cleanup=False)
    assert rc == 0
    st = tracefs.read_status(trace)
    assert st is not None and st["status"] == "recorded" and st["lost_events"] == 0
    # Pretend the kernel had dropped events: trace-info must say so.
    st["lost_events"] = 7
    tracefs.write_status(trace, st)
    info = subprocess.run([*CLI, "trace-info", str(trace)], capture_output=True, text=True)
    assert "kernel tracepoints: recorded, but events were LOST: 7 dropped/overrun" in info.stdout


def test_the_instance_is_gone_after_a_trace_and_events_are_on_one_clock(tmp_path: Path) -> None:
    f = cold_file(tmp_path / "f.bin", 2 << 20)
    before = instances()
    trace = tmp_path / "t"
    rc = run_traced(["cat", str(f)], trace, match=[str(f)], background_cleanup=False)
    assert rc == 0 and instances() == before
    log = read_trace(trace)
    ins = log.events[(log.events["source"] == Source.PERF) & (log.events["op"] == Op.PAGE_IN)]
    assert int(ins["length"].sum()) >= 2 << 20
    cat = log.events[log.events["source"] == Source.PRELOAD]
    assert set(ins["pid"].tolist()) == set(cat["pid"].tolist())  # the task tree, from the kernel
    assert log.meta["kernel"]["missed_pages"] == 0


def test_unavailable_tracefs_says_why_and_the_program_still_runs(tmp_path: Path) -> None:
    trace = tmp_path / "t"
    r = subprocess.run(
        [*CLI, "trace", "--kernel", "off", "-o", str(trace), "--", "true"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    assert tracefs.read_status(trace) == {"status": "off", "reason": "disabled (--kernel off)"}


def test_targets_filter_the_matched_files_and_their_fuse_connection(tmp_path: Path) -> None:
    a = tmp_path / "d" / "a.bin"
    a.parent.mkdir()
    a.write_bytes(b"x")
    t = tracefs.targets_for([str(a.parent)])
    st = os.stat(a)
    kdev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
    assert t.devs == [kdev] and t.inodes == [st.st_ino] and t.fuse == []
    assert t.page_filter() == f"(s_dev == {kdev}) && (i_ino == {st.st_ino})"
    many = tracefs.targets_for([str(a.parent)], limit=0)
    assert many.inodes is None and many.page_filter() == f"s_dev == {kdev}"


def test_an_unmounted_tracefs_is_mounted_as_root() -> None:
    # A machine booted without systemd has no tracefs mounted; kernel tracing mounts it
    # (as libtracefs does) instead of reporting the kernel's tracepoints as unavailable.
    root = tracefs.TRACEFS_ROOTS[0]
    if os.geteuid() != 0 or not (root / "instances").is_dir():
        pytest.skip("needs root and a kernel with tracefs")
    busy = [p.name for p in (root / "instances").iterdir() if p.name.startswith("cmio-")]
    if busy:
        pytest.skip(f"tracefs instances in use by other traces: {busy}")
    subprocess.run(["umount", str(root)], check=True)
    try:
        assert not (root / "instances").is_dir()
        assert tracefs.tracefs_root() == root
        assert tracefs.unavailable_reason() is None
    finally:
        if not (root / "instances").is_dir():
            subprocess.run(["mount", "-t", "tracefs", "tracefs", str(root)], check=True)
