"""The trace reader and exports on real traces, and on damaged ones (hypothesis)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmfs_modelio.core.events import EventFileError, EventLog, FileEntry, Op, Source, empty_events
from cvmfs_modelio.trace.export import export_text, fio_iolog
from cvmfs_modelio.trace.tracer import merge_logs, read_trace, traced_env

CLI = [sys.executable, "-m", "cvmfs_modelio.cli"]


@pytest.fixture(scope="module")
def cat_trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    tmp = tmp_path_factory.mktemp("cat")
    f = tmp / "in.bin"
    size = 2 * 1024 * 1024 + 100
    f.write_bytes(np.random.Generator(np.random.PCG64(5)).bytes(size))
    trace = tmp / "trace"
    r = subprocess.run(
        [
            *CLI,
            "trace",
            "-o",
            str(trace),
            "--match",
            str(f),
            "--",
            "sh",
            "-c",
            f"cat {f} > /dev/null; dd if={f} of=/dev/null bs=64k status=none",
        ],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return trace, f, size


def test_trace_info_totals(cat_trace: tuple[Path, Path, int]) -> None:
    trace, f, size = cat_trace
    r = subprocess.run([*CLI, "trace-info", str(trace)], capture_output=True, text=True, check=True)
    row = next(line for line in r.stdout.splitlines() if line.startswith(str(f)))
    assert "4.0 MiB" in row  # cat and dd: twice the file
    log = read_trace(trace)
    # One stream per process image: sh, its two forked children, then cat and dd, which
    # exec'd in those children (same pid, next sequence number).
    procs = [p for p in log.meta["processes"] if p["source"] == "preload"]
    assert sorted(p["argv"][0] for p in procs) == ["cat", "dd", "sh", "sh", "sh"]
    for p in procs:
        if p["argv"][0] in ("cat", "dd"):
            assert Path(p["file"]).name == f"{p['pid']}.1.cmtr"
    assert len(log.files) == 1
    reads = log.events[log.events["op"] == Op.READ]
    assert int(reads["result"].sum()) == 2 * size


@pytest.mark.tools("fio")
def test_exports(cat_trace: tuple[Path, Path, int], tmp_path: Path) -> None:
    trace, _, size = cat_trace
    log = read_trace(trace)
    doc = json.loads(export_text(log, "chrome"))
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == log.events.size
    assert {e["tid"] for e in slices} == {int(t) for t in log.events["tid"]}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in slices)
    rows = list(csv.reader(io.StringIO(export_text(log, "csv"))))
    assert rows[0][:2] == ["t_start_ns", "duration_ns"] and len(rows) == log.events.size + 1
    assert sum(int(r[4]) for r in rows[1:] if r[-2] == "read" and int(r[4]) > 0) == 2 * size
    # fio accepts the iolog and replays exactly the bytes that were read.
    out = tmp_path / "replay.iolog"
    subprocess.run([*CLI, "export", str(trace), "--format", "fio", "-o", str(out)], check=True)
    text = out.read_text()
    assert text.startswith("fio version 3 iolog\n")
    fio = subprocess.run(
        [
            "fio",
            "--name=replay",
            f"--read_iolog={out}",
            "--ioengine=psync",
            "--replay_no_stall=1",
            "--output-format=json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    job = json.loads(fio.stdout[fio.stdout.index("{") :])["jobs"][0]
    assert job["error"] == 0
    assert job["read"]["io_bytes"] == 2 * size
    assert job["read"]["total_ios"] == sum(1 for line in text.splitlines() if " read " in line)


def test_bad_traces_give_one_line(tmp_path: Path) -> None:
    r = subprocess.run([*CLI, "trace-info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (
        2,
        f"cvmfs-modelio: {tmp_path / 'nope'}: no such file or directory\n",
    )
    r = subprocess.run([*CLI, "trace-info", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "no trace files" in r.stderr
    (tmp_path / "1.0.cmtr").write_bytes(b"CMIOEVT1\x01\x00")
    r = subprocess.run(
        [*CLI, "export", str(tmp_path), "--format", "csv"], capture_output=True, text=True
    )
    assert (r.returncode, r.stderr.count("\n")) == (2, 1)
    assert "1.0.cmtr: truncated header" in r.stderr


def test_merge_rejects_unknown_file_id() -> None:
    ev = empty_events(1)
    ev["file_id"] = 3
    with pytest.raises(EventFileError, match=r"x\.cmtr: events refer to file id 3"):
        merge_logs([("x.cmtr", EventLog(ev, {0: FileEntry(0, "/a", 1)}))])


def test_merge_unifies_files_across_processes() -> None:
    a = empty_events(2)
    a["file_id"] = [0, 1]
    a["t_start_ns"] = [10, 30]
    b = empty_events(1)
    b["file_id"] = [0]
    b["t_start_ns"] = [20]
    la = EventLog(a, {0: FileEntry(0, "/x", 5, 1, 7), 1: FileEntry(1, "/y", 6, 1, 8)}, {"pid": 1})
    lb = EventLog(b, {0: FileEntry(0, "/y", 6, 1, 8)}, {"pid": 2})
    m = merge_logs([("a", la), ("b", lb)])
    assert [e.path for e in m.files.values()] == ["/x", "/y"]
    assert m.events["file_id"].tolist() == [0, 1, 1]
    assert m.events["t_start_ns"].tolist() == [10, 20, 30]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_damaged_trace_files(
    cat_trace: tuple[Path, Path, int], tmp_path: Path, data: st.DataObject
) -> None:
    trace, _, _ = cat_trace
    raw = bytearray(sorted(trace.glob("*.cmtr"))[0].read_bytes())
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=4)
    )
    for pos, val in flips:
        raw[pos] = val
    damaged = bytes(raw[:cut])
    d = tmp_path / f"t{abs(hash(damaged))}"
    d.mkdir(exist_ok=True)
    (d / "1.0.cmtr").write_bytes(damaged)
    try:
        log = read_trace(d)
    except EventFileError as e:
        assert "\n" not in str(e) and "1.0.cmtr" in str(e)
        return
    export_text(log, "chrome")
    export_text(log, "csv")
    fio_iolog(log)


def test_env_checks(tmp_path: Path) -> None:
    from cvmfs_modelio.core.errors import UsageError

    with pytest.raises(UsageError, match="--match rel: must be an absolute path prefix"):
        traced_env(tmp_path, ["rel"])
    with pytest.raises(UsageError, match="--sample-us -1: must be >= 0"):
        traced_env(tmp_path, [], sample_us=-1)


@pytest.mark.root
def test_kernel_page_cache_events_on_the_same_clock(tmp_path: Path) -> None:
    f = tmp_path / "cold.bin"
    size = 1_000_000
    f.write_bytes(np.random.Generator(np.random.PCG64(9)).bytes(size))
    fd = os.open(f, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    trace = tmp_path / "t"
    r = subprocess.run(
        [*CLI, "trace", "--kernel", "on", "-o", str(trace), "--match", str(f), "--", "cat", str(f)],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert len(r.stdout) == size
    log = read_trace(trace)
    perf = log.events[log.events["source"] == Source.PERF]
    adds = perf[perf["op"] == Op.PAGE_IN]
    pages = np.zeros((size + 4095) // 4096, dtype=np.int64)
    for e in adds:
        pages[int(e["offset"]) // 4096 : (int(e["offset"]) + int(e["length"])) // 4096] += 1
    assert pages.tolist() == [1] * pages.size  # every page of the file came in exactly once
    cat = log.events[log.events["source"] == Source.PRELOAD]
    first = int(cat["t_start_ns"].min())
    last = int((cat["t_start_ns"] + cat["duration_ns"]).max())
    # Same CLOCK_MONOTONIC: the page-cache insertions happen inside cat's open..close.
    assert np.all((adds["t_start_ns"] >= first) & (adds["t_start_ns"] <= last))
    assert set(adds["pid"].tolist()) == set(cat["pid"].tolist())
    info = subprocess.run([*CLI, "trace-info", str(trace)], capture_output=True, text=True)
    assert "kernel tracepoints: recorded, none lost" in info.stdout
    assert log.meta["kernel"]["lost_events"] == 0 and log.meta["kernel"]["missed_pages"] == 0


def test_kernel_off_says_why(tmp_path: Path) -> None:
    trace = tmp_path / "t"
    r = subprocess.run(
        [*CLI, "trace", "--perf", "off", "-o", str(trace), "--", "true"],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0
    info = subprocess.run([*CLI, "trace-info", str(trace)], capture_output=True, text=True)
    assert "kernel tracepoints: off: disabled (--kernel off)" in info.stdout
