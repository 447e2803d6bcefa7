"""``cvmfs-modelio probe``/``demo`` on the command line: tables, JSON, and every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvmfs_modelio import cli
from cvmfs_modelio.core.events import read_event_file
from tests.probe.probe_reference import random_ops, write_pattern_file, write_synced

PATTERNS = "seq, reverse, stride, rand, replay, mmap-seq, mmap-rand, mmap-list"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvmfs_modelio.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    return write_pattern_file(tmp_path / "small.bin", 1000)


def bad(args: list[str], line: str) -> None:
    r = run_cli("probe", *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"cvmfs-modelio: {line}\n"
    assert r.stdout == ""


def test_missing_path(tmp_path: Path) -> None:
    p = tmp_path / "nope.onnx"
    bad([str(p)], f"{p}: no such file or directory")


def test_directory(tmp_path: Path) -> None:
    bad([str(tmp_path)], f"{tmp_path}: is a directory")


def test_empty_file(tmp_path: Path) -> None:
    p = write_synced(tmp_path / "empty.onnx", b"")
    bad([str(p), "--pattern", "rand"], f"{p}: file is empty")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    p = tmp_path / "fifo"
    os.mkfifo(p)
    # No writer ever opens it: opening it for reading would block forever.
    bad([str(p)], f"{p}: is a FIFO, not a regular file")


def test_character_device() -> None:
    bad(["/dev/null"], "/dev/null: is a character device, not a regular file")


@pytest.fixture()
def root_only_file() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="probe-perm-"))
    os.chmod(d, 0o755)
    p = write_synced(d / "secret.onnx", b"x" * 5000)
    os.chmod(p, 0o600)
    try:
        yield p
    finally:
        p.unlink()
        d.rmdir()


def test_permission_denied(root_only_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Tests run as root, who may read anything: drop to nobody for the call (after the
    # command modules are imported: the interpreter may live where nobody cannot read).
    cli.build_parser()
    os.seteuid(65534)
    try:
        rc = cli.main(["probe", str(root_only_file)])
    finally:
        os.seteuid(0)
    out, err = capsys.readouterr()
    assert rc == 2
    assert err == f"cvmfs-modelio: {root_only_file}: permission denied\n"
    assert out == ""


def test_block_zero(small: Path) -> None:
    bad([str(small), "--block", "0"], "--block: '0' is less than 1 bytes")


def test_block_larger_than_file_for_random(small: Path) -> None:
    bad(
        [str(small), "--pattern", "rand", "--block", "4KiB"],
        f"{small}: block size 4096 is larger than the file (1000 bytes)",
    )
    bad(
        [str(small), "--pattern", "mmap-rand", "--block", "2000"],
        f"{small}: block size 2000 is larger than the file (1000 bytes)",
    )


def test_count_zero(small: Path) -> None:
    bad(
        [str(small), "--pattern", "rand", "--block", "10", "--count", "0"],
        "--count: 0 is less than 1",
    )


def test_count_not_a_number(small: Path) -> None:
    bad([str(small), "--count", "many"], "--count: 'many' is not a whole number")


def test_unknown_pattern(small: Path) -> None:
    bad(
        [str(small), "--pattern", "zigzag"],
        "--pattern: invalid choice: 'zigzag' (choose from "
        + ", ".join(f"'{p}'" for p in PATTERNS.split(", "))
        + ")",
    )


def test_unknown_fadvise(small: Path) -> None:
    bad(
        [str(small), "--fadvise", "fast"],
        "--fadvise: invalid choice: 'fast' (choose from 'normal', 'sequential', 'random', "
        "'willneed', 'dontneed', 'noreuse')",
    )


def test_unknown_madvise(small: Path) -> None:
    bad(
        [str(small), "--pattern", "mmap-seq", "--madvise", "dontfork"],
        "--madvise: invalid choice: 'dontfork' (choose from 'normal', 'sequential', "
        "'random', 'willneed', 'hugepage')",
    )


def test_madvise_needs_an_mmap_pattern(small: Path) -> None:
    bad(
        [str(small), "--pattern", "seq", "--madvise", "random"],
        f"{small}: madvise applies to mmap patterns only, not 'seq'",
    )


def test_bad_size(small: Path) -> None:
    bad(
        [str(small), "--block", "4XB"],
        "--block: cannot parse size '4XB' (use e.g. 4KiB, 4M, 4194304)",
    )


def test_threads_out_of_range(small: Path) -> None:
    bad([str(small), "--threads", "0"], "--threads: 0 is less than 1")
    bad([str(small), "--threads", "1025"], "--threads: 1025 is more than 1024")


def test_replay_needs_a_list(small: Path) -> None:
    bad(
        [str(small), "--pattern", "replay"],
        f"{small}: pattern 'replay' needs a list of (offset, length)",
    )


def test_list_with_a_bad_line(small: Path, tmp_path: Path) -> None:
    lst = tmp_path / "ops.txt"
    lst.write_text("# offset length\n0 10\n5 ten\n")
    bad(
        [str(small), "--pattern", "replay", "--list", str(lst)],
        f"{lst}:3: expected 'offset length' (two whole numbers of bytes)",
    )


def test_list_entry_outside_the_file(small: Path, tmp_path: Path) -> None:
    lst = tmp_path / "ops.txt"
    lst.write_text("0 10\n995, 6\n")
    bad(
        [str(small), "--pattern", "mmap-list", "--list", str(lst)],
        f"{small}: list entry 2 (995, 6) is not inside the file (1000 bytes)",
    )


def test_missing_list_file(small: Path, tmp_path: Path) -> None:
    lst = tmp_path / "none.txt"
    bad(
        [str(small), "--pattern", "replay", "--list", str(lst)], f"{lst}: no such file or directory"
    )


def test_json_into_missing_directory(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "r.json"
    bad([str(small), "--json", str(out)], f"{out}: directory {out.parent} does not exist")
    bad([str(small), "--json", str(tmp_path)], f"{tmp_path}: is a directory")
    bad([str(small), "--events", str(tmp_path)], f"{tmp_path}: is a directory")


def test_probe_prints_table_and_writes_json(tmp_path: Path) -> None:
    f = write_pattern_file(tmp_path / "m.onnx", 3 << 20)
    out = tmp_path / "r.json"
    lst = tmp_path / "ops.txt"
    r = run_cli(
        "probe",
        str(f),
        "--pattern",
        "rand",
        "--block",
        "4KiB",
        "--count",
        "500",
        "--seed",
        "4",
        "--threads",
        "2",
        "--cold",
        "--faults",
        "--verify",
        "--fadvise",
        "random",
        "--json",
        str(out),
        "--events",
        str(tmp_path / "ev.bin"),
    )
    assert r.returncode == 0, r.stderr
    log = read_event_file(tmp_path / "ev.bin")
    assert len(log.events) == 500 and (log.events["result"] == 4096).all()
    assert log.events["offset"].tolist() == [o for o, _ in random_ops(3 << 20, 4096, 4096, 500, 4)]
    assert (log.events["minflt"] >= 0).all()
    (entry,) = log.files.values()
    assert entry.path == str(f) and entry.size == 3 << 20 and entry.inode == f.stat().st_ino
    assert log.meta["source"] == "probe" and log.meta["summary"]["ops"] == 500
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert lines["operations"] == "500 (0 failed)"
    assert lines["bytes"] == "2.0 MiB (2048000 B)"
    assert lines["threads"] == "2"
    assert lines["cold"] == "evicted (fdatasync ok; 0 pages resident)"
    assert "NOT" not in lines
    assert lines["hints"] == "fadvise(random)=ok"
    assert lines["verify"] == "file: 0 bad bytes in 0 ops"
    assert lines["resident"].startswith("before 0/768 pages  after ")
    data = json.loads(out.read_text())
    s = data["summary"]
    assert s["ops"] == 500 and s["read_bytes"] == 2048000 and s["resident_pages_before"] == 0
    assert s["file_size_bytes"] == 3 << 20 and s["file_pages"] == 768
    assert s["throughput_bytes_per_s"] > 0 and s["not_cold"] is None
    assert s["params"] == {
        "block_bytes": 4096,
        "stride_bytes": 8192,
        "ops": 500,
        "align_bytes": 4096,
        "seed": 4,
    }
    assert data["schema"] == {"name": "cvmfs-modelio.probe", "version": 2}
    assert set(s["latency_ns"]) == {"min", "p50", "p90", "p99", "p999", "max", "mean"}
    assert data["environment"]["kernel"] == os.uname().release
    assert not list(tmp_path.glob(".r.json.*"))  # no temp file left behind
    lst.write_text("0 4096\n8192 100\n")
    r = run_cli(
        "probe", str(f), "--pattern", "mmap-list", "--list", str(lst), "--madvise", "sequential"
    )
    assert r.returncode == 0, r.stderr
    assert "operations  2 (0 failed)" in r.stdout
    assert "hints       madvise(sequential)=ok" in r.stdout


def test_cold_right_after_writing_is_cold(tmp_path: Path) -> None:
    """The README's probe --cold on a model written a moment ago (issue 8: it printed
    'eviction FAILED', then warm numbers, and exited 0): flushed, evicted, cold."""
    f = tmp_path / "m.onnx.data"
    f.write_bytes(os.urandom(4 << 20))  # dirty pages, no sync
    r = run_cli("probe", str(f), "--pattern", "rand", "--block", "4KiB", "--count", "100", "--cold")
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert lines["cold"] == "evicted (fdatasync ok; 0 pages resident)"
    assert lines["resident"].startswith("before 0/1024 pages  after ")


def test_cold_that_cannot_evict_exits_1_with_one_line(tmp_path: Path) -> None:
    import mmap

    f = write_pattern_file(tmp_path / "held.bin", 64 * 4096)
    out = tmp_path / "r.json"
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        _ = sum(m[off] for off in range(0, 64 * 4096, 4096))  # every page mapped here
        r = run_cli("probe", str(f), "--cold", "--json", str(out))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == (
        f"cvmfs-modelio: {f}: cold run refused: 64 of 64 pages still in the page cache after "
        "fdatasync (ok) and eviction; is another process mapping or writing it?\n"
    )
    assert not out.exists()
