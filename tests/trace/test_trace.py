"""The LD_PRELOAD tracer on real programs: cat, dd, a C test program, ONNX Runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.core.events import EventLog, Events, Op, Source
from cvmfs_modelio.trace.tracer import read_trace, traced_env

DATA = Path(__file__).parent / "data"
PAGE = os.sysconf("SC_PAGESIZE")


def run_traced(
    tmp: Path, cmd: list[str], match: list[str], **kw: object
) -> tuple[subprocess.CompletedProcess[bytes], EventLog]:
    trace = tmp / f"trace{len(list(tmp.glob('trace*')))}"
    trace.mkdir()
    env = traced_env(trace, match)
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    return proc, read_trace(trace)


def evict(path: Path) -> None:
    """Drop one file's pages from the page cache (after writing them back)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_random(path: Path, size: int, seed: int = 1) -> bytes:
    data = np.random.Generator(np.random.PCG64(seed)).bytes(size)
    path.write_bytes(data)
    return data


def ops(ev: Events) -> list[str]:
    return [Op(int(o)).name for o in ev["op"]]


def file_events(log: EventLog, path: Path) -> Events:
    ids = [f for f, e in log.files.items() if e.path == str(path)]
    assert len(ids) == 1, log.files
    ev: Events = log.events[log.events["file_id"] == ids[0]]
    return ev


def read_bytes(ev: Events) -> int:
    reads = ev[(ev["source"] == Source.PRELOAD) & np.isin(ev["op"], [Op.READ, Op.PREAD])]
    return int(np.clip(reads["result"], 0, None).sum())


@pytest.fixture(scope="module")
def trace_prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prog") / "trace_prog"
    subprocess.run(
        ["gcc", "-O1", "-Wall", "-Werror", "-pthread", "-o", str(out), str(DATA / "trace_prog.c")],
        check=True,
    )
    return out


# ------------------------------------------------------------------ cat and dd


def test_cat_reads_whole_file(tmp_path: Path) -> None:
    f = tmp_path / "in.bin"
    data = write_random(f, 3 * 1024 * 1024 + 17)
    proc, log = run_traced(tmp_path, ["cat", str(f)], [str(tmp_path)])
    assert proc.returncode == 0
    assert proc.stdout == data
    ev = file_events(log, f)
    assert read_bytes(ev) == len(data)
    reads = ev[ev["op"] == Op.READ]
    # Offsets come from the tracked position: each read starts where the last ended.
    assert reads["offset"][0] == 0
    assert np.all(reads["offset"][1:] == reads["offset"][:-1] + reads["result"][:-1])
    assert ops(ev)[0] == "OPEN" and ops(ev)[-1] == "CLOSE"
    assert set(log.files[int(ev["file_id"][0])].__dict__.items()) >= {("size", len(data))}


@pytest.mark.parametrize("bs", ["4k", "1M"])
def test_dd_reads_whole_file(tmp_path: Path, bs: str) -> None:
    f = tmp_path / "in.bin"
    data = write_random(f, 5 * 1024 * 1024 + 4095)
    out = tmp_path / "out.bin"
    proc, log = run_traced(
        tmp_path, ["dd", f"if={f}", f"of={out}", f"bs={bs}", "status=none"], [str(f)]
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == data
    ev = file_events(log, f)
    assert read_bytes(ev) == len(data)
    assert len(log.files) == 1  # the output file is outside --match


# ------------------------------------------------------------------ the C program


def test_c_program_exact_events(tmp_path: Path, trace_prog: Path) -> None:
    data_file = tmp_path / "data.bin"
    map_file = tmp_path / "map.bin"
    write_random(data_file, 65536, seed=2)
    write_random(map_file, 16 * PAGE, seed=3)
    evict(map_file)
    proc, log = run_traced(
        tmp_path,
        [str(trace_prog), str(data_file), str(map_file)],
        [str(data_file), str(map_file), "/nonexistent/"],
    )
    assert proc.returncode == 3, proc.stderr
    procs = log.meta["processes"]
    assert len(procs) == 2  # the program and its forked child
    child = next(p["pid"] for p in procs if any(q["pid"] == p["ppid"] for q in procs))
    parent = next(p["pid"] for p in procs if p["pid"] != child)
    ev = log.events
    main = ev[(ev["pid"] == parent) & (ev["tid"] == parent)]
    d = log.files
    fid = {Path(e.path).name: f for f, e in d.items()}
    rows = [
        (
            Op(int(e["op"])).name,
            int(e["fd"]),
            int(e["file_id"]),
            int(e["offset"]),
            int(e["length"]),
            int(e["result"]),
            int(e["err"]),
        )
        for e in main
        if e["source"] == Source.PRELOAD
    ]
    D, M = fid["data.bin"], fid["map.bin"]
    mm = main[main["op"] == Op.MMAP]
    addr = int(mm["result"][0])
    assert addr > 0 and addr % PAGE == 0
    assert int(main[main["op"] == Op.MUNMAP]["aux"][0]) == addr  # munmap records the address
    expect = [
        ("OPEN", 3, D, -1, 0, 3, 0),
        ("PREAD", 3, D, 0, 4096, 4096, 0),
        ("READ", 3, D, 0, 100, 100, 0),
        ("READ", 3, D, 100, 100, 100, 0),
        ("LSEEK", 3, D, 8192, 0, 8192, 0),
        ("DUP", 3, D, -1, 0, 4, 0),
        ("READ", 4, D, 8192, 50, 50, 0),  # the dup shares the file position
        ("READV", 3, D, 8242, 30, 30, 0),
        ("STAT", 4, D, -1, 0, 0, 0),
        ("CLOSE", 4, D, -1, 0, 0, 0),
        ("READ", 3, D, 8272, 10, -1, 14),  # EFAULT
        ("PREAD", 3, D, -1, 10, -1, 22),  # EINVAL
        ("OPEN", -1, -1, -1, 0, -1, 2),  # ENOENT under a traced prefix
        ("CLOSE", 3, D, -1, 0, 0, 0),
        ("FOPEN", 3, D, -1, 0, 3, 0),
        ("FREAD", 3, D, 0, 1000, 1000, 0),
        ("FCLOSE", 3, D, -1, 0, 0, 0),
        ("OPEN", 3, M, -1, 0, 3, 0),
        ("MMAP", 3, M, 0, 4 * PAGE, addr, 0),
        ("MADVISE", -1, M, 0, 4 * PAGE, 0, 0),
        ("CLOSE", 3, M, -1, 0, 0, 0),
        ("MUNMAP", -1, M, 0, 4 * PAGE, 0, 0),
    ]
    assert rows == expect
    # Two threads, one pread each, on their own tids.
    threads = ev[(ev["pid"] == parent) & (ev["tid"] != parent) & (ev["source"] == Source.PRELOAD)]
    assert sorted((int(e["offset"]), int(e["result"])) for e in threads) == [
        (4096, 4096),
        (8192, 4096),
    ]
    assert len(set(threads["tid"].tolist())) == 2
    # The forked child wrote its own stream, and knows the inherited file.
    kid = ev[ev["pid"] == child]
    assert ops(kid) == ["PREAD"]
    assert (int(kid["offset"][0]), int(kid["result"][0]), int(kid["file_id"][0])) == (12345, 10, D)
    # Pages 1 and 3 were touched (MADV_RANDOM: no read-around): exactly those came in.
    pages = ev[ev["source"] == Source.MINCORE]
    runs = sorted((Op(int(e["op"])).name, int(e["offset"]), int(e["length"])) for e in pages)
    assert runs == [
        ("PAGE_FAULT", PAGE, PAGE),
        ("PAGE_FAULT", 3 * PAGE, PAGE),
        ("PAGE_IN", PAGE, PAGE),
        ("PAGE_IN", 3 * PAGE, PAGE),
    ]
    assert np.all(pages["aux"] == pages["duration_ns"]) and np.all(pages["aux"] > 0)
    assert np.all(pages["file_id"] == M)


def test_exit_status_output_errno_unchanged(tmp_path: Path, trace_prog: Path) -> None:
    data_file = tmp_path / "data.bin"
    map_file = tmp_path / "map.bin"
    write_random(data_file, 65536)
    write_random(map_file, 16 * PAGE)
    cmd = [str(trace_prog), str(data_file), str(map_file)]
    plain = subprocess.run(cmd, capture_output=True, check=False)
    traced, _ = run_traced(tmp_path, cmd, [])
    assert plain.returncode == traced.returncode == 3
    assert plain.stdout == traced.stdout
    assert b"read(NULL) = -1 errno=14" in plain.stdout
    assert traced.stderr == plain.stderr == b""


def test_cli_propagates_status_and_output(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "cvmfs_modelio.cli", "trace", "-o", str(tmp_path / "t"), "--"]
    r = subprocess.run([*cli, "sh", "-c", "echo hello; exit 42"], capture_output=True, check=False)
    assert (r.returncode, r.stdout, r.stderr) == (42, b"hello\n", b"")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvmfs_modelio.cli",
            "trace",
            "-o",
            str(tmp_path / "u"),
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 128 + 15
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvmfs_modelio.cli",
            "trace",
            "-o",
            str(tmp_path / "v"),
            "--",
            "/nonexistent/prog",
        ],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr == b"cvmfs-modelio: /nonexistent/prog: command not found\n"


def test_exec_children_stay_traced(tmp_path: Path) -> None:
    f = tmp_path / "in.bin"
    data = write_random(f, 100_000)
    proc, log = run_traced(tmp_path, ["sh", "-c", f"cat {f} >/dev/null; cat {f} | wc -c"], [str(f)])
    assert proc.stdout.strip() == b"100000"
    readers = {int(p) for p in log.events["pid"]}
    assert len(readers) == 2
    assert read_bytes(file_events(log, f)) == 2 * len(data)


def test_unwritable_trace_dir_warns_once(tmp_path: Path) -> None:
    f = tmp_path / "in.bin"
    write_random(f, 1000)
    env = traced_env(tmp_path / "missing" / "dir", [])
    env["CMIO_TRACE_DIR"] = str(tmp_path / "missing" / "dir")
    r = subprocess.run(
        ["sh", "-c", f"cat {f} | wc -c; cat {f} | wc -c"], env=env, capture_output=True, check=False
    )
    assert r.returncode == 0
    assert r.stdout == b"1000\n1000\n"
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cvmfs-modelio trace: warning: cannot write trace file in ")
    assert lines[0].endswith("(open failed, errno 2); running untraced")


@pytest.fixture(scope="module")
def trace_sig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sig") / "trace_sig"
    subprocess.run(
        ["gcc", "-O1", "-Wall", "-Werror", "-pthread", "-o", str(out), str(DATA / "trace_sig.c")],
        check=True,
    )
    return out


def test_signal_handlers_doing_io(tmp_path: Path, trace_sig: Path) -> None:
    f = tmp_path / "in.bin"
    write_random(f, 8192)
    proc, log = run_traced(tmp_path, [str(trace_sig), str(f), "signal"], [str(f)])
    assert proc.returncode == 0, proc.stderr
    hits = int(proc.stdout)
    assert hits > 0
    ev = file_events(log, f)
    preads = ev[ev["op"] == Op.PREAD]
    assert int(np.sum(preads["length"] == 4096)) == 20000
    assert int(np.sum(preads["length"] == 16)) == hits  # none lost, none doubled
    assert np.all(preads["result"] == preads["length"])


def test_exit_from_a_thread_flushes_every_buffer(tmp_path: Path, trace_sig: Path) -> None:
    f = tmp_path / "in.bin"
    write_random(f, 8192)
    proc, log = run_traced(tmp_path, [str(trace_sig), str(f), "thread-exit"], [str(f)])
    assert proc.returncode == 5
    ev = file_events(log, f)
    preads = ev[ev["op"] == Op.PREAD]
    pid = int(ev["pid"][0])
    assert int(np.sum(preads["tid"] == pid)) == 1000  # the main thread's, still buffered
    assert int(np.sum(preads["tid"] != pid)) == 10


def test_vfork_exec_child_is_traced(tmp_path: Path, trace_sig: Path) -> None:
    f = tmp_path / "in.bin"
    data = write_random(f, 50_000)
    proc, log = run_traced(tmp_path, [str(trace_sig), str(f), "vfork"], [str(f)])
    assert proc.returncode == 0
    assert proc.stdout == data
    ev = file_events(log, f)
    pids = {int(p) for p in ev["pid"]}
    assert len(pids) == 2
    cat = [p["pid"] for p in log.meta["processes"] if p["argv"][0] == "cat"]
    assert len(cat) == 1
    assert read_bytes(ev[ev["pid"] == cat[0]]) == len(data)
    parent = ev[ev["pid"] != cat[0]]
    assert ops(parent) == ["OPEN", "PREAD"]


def test_library_needs_only_libc() -> None:
    """No C++ runtime in the interposer: it must not allocate or throw behind the program."""
    from cvmfs_modelio.trace.tracer import preload_library

    r = subprocess.run(
        ["readelf", "-d", str(preload_library())], capture_output=True, text=True, check=True
    )
    needed = sorted(
        line.split("[")[1].rstrip("]") for line in r.stdout.splitlines() if "(NEEDED)" in line
    )
    assert needed == ["libc.so.6"]
