"""The chunks/analyze/sweep/dedup commands, end to end through the CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio import _native
from cvmfs_modelio.cli import main
from cvmfs_modelio.core.events import EventLog, FileEntry, Op, empty_events, write_event_file
from tests.conftest import CMS_MODELS

KIB = 1024


@pytest.fixture
def rnd(tmp_path: Path) -> Path:
    f = tmp_path / "model.bin"
    f.write_bytes(np.random.Generator(np.random.PCG64(21)).bytes(3 << 20))
    return f


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_chunks_xor32_json_and_list(
    rnd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    j = tmp_path / "l.json"
    rc, out, _ = run_cli(
        [
            "chunks",
            str(rnd),
            "--min",
            "64KiB",
            "--avg",
            "128K",
            "--max",
            "512KiB",
            "--list",
            "--json",
            str(j),
        ],
        capsys,
    )
    assert rc == 0
    expected = _native.xor32_offsets(rnd.read_bytes(), 64 * KIB, 128 * KIB, 512 * KIB).tolist()
    doc = json.loads(j.read_text())
    assert [c["offset_bytes"] for c in doc["chunks"]] == expected
    assert doc["source"] == "xor32" and doc["n_chunks"] == len(expected)
    assert doc["params"] == {"min_bytes": 65536, "avg_bytes": 131072, "max_bytes": 524288}
    assert doc["file_size_bytes"] == 3 << 20
    assert doc["schema"] == {"name": "cvmfs-modelio.chunks", "version": 2}
    assert "kernel" in doc["environment"]
    assert f"{len(expected)} chunks:" in out
    assert "layout: xor32 64.0 KiB/128.0 KiB/512.0 KiB" in out
    assert f"\n{len(expected) - 1}  " in out  # last row of --list


def test_chunks_default_not_on_cvmfs(rnd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["chunks", str(rnd)], capsys)
    assert rc == 0
    assert "layout: xor32 4.0 MiB/8.0 MiB/16.0 MiB" in out
    assert "not chunked: one object, fetched whole at open()" in out


def test_chunks_fixed_and_fastcdc(rnd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["chunks", str(rnd), "--fixed", "1MiB"], capsys)
    assert rc == 0 and "3 chunks:" in out and "layout: fixed 1.0 MiB" in out
    rc, out, _ = run_cli(
        ["chunks", str(rnd), "--fastcdc", "64KiB/256KiB/1MiB", "--json", "-"], capsys
    )
    doc = json.loads(out[out.index("{") :])
    expected = _native.chunk_offsets(rnd.read_bytes(), "fastcdc", 64 * KIB, 256 * KIB, 1 << 20)
    assert [c["offset_bytes"] for c in doc["chunks"]] == expected.tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min", "16"], "min chunk size must be at least 32 bytes, got 16"),
        (["--min", "8M"], "chunk sizes must satisfy min < avg < max, got 8388608, 8388608"),
        (["--min", "1M", "--avg", "4M", "--max", "2M"], "min < avg < max"),
        (["--avg", "lots"], "--avg: cannot parse size 'lots'"),
        (["--fixed", "0"], "--fixed: '0' is less than 1 bytes"),
        (["--fastcdc", "1M,2M"], "--fastcdc: expected MIN/AVG/MAX"),
        (["--fastcdc", "32/64/128"], "FastCDC min chunk size must be at least 64 bytes"),
        (["--min", "1M", "--fixed", "1M"], "cannot be combined"),
    ],
)
def test_chunks_invalid_parameters(
    rnd: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run_cli(["chunks", str(rnd), *args], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and message in err
    assert out == ""


def test_chunks_from_cvmfs_off_cvmfs_and_missing(
    rnd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run_cli(["chunks", str(rnd), "--from-cvmfs"], capsys)
    assert rc == 2
    assert err == f"cvmfs-modelio: {rnd}: not on CVMFS (no user.chunk_list attribute)\n"
    rc, _, err = run_cli(["chunks", str(tmp_path / "nope")], capsys)
    assert rc == 2 and "nope: no such file" in err


def test_console_script_exit_status(rnd: Path) -> None:
    beside = Path(sys.executable).parent / "cvmfs-modelio"
    exe = str(beside) if beside.exists() else shutil.which("cvmfs-modelio")
    if exe is None:
        pytest.skip("console script not on PATH")
    r = subprocess.run([exe, "chunks", str(rnd), "--min", "31"], capture_output=True, text=True)
    assert r.returncode == 2
    assert (
        r.stderr
        == "cvmfs-modelio: --min/--avg/--max: min chunk size must be at least 32 bytes, got 31\n"
    )


def write_trace(path: Path, target: Path, rows: list[tuple[int, int, int, int, int]]) -> None:
    """rows: (t, op, offset, length, fd) for file 0 = target; one unrelated read of file 1."""
    ev = empty_events(len(rows) + 1)
    for i, (t, op, off, ln, fd) in enumerate(rows):
        ev[i]["t_start_ns"], ev[i]["op"], ev[i]["offset"] = t, op, off
        ev[i]["length"], ev[i]["fd"], ev[i]["pid"], ev[i]["file_id"] = ln, fd, 42, 0
    ev[-1]["op"], ev[-1]["offset"], ev[-1]["length"], ev[-1]["file_id"] = Op.READ, 0, 10, 1
    ev[-1]["t_start_ns"] = 5
    files = {
        0: FileEntry(0, str(target), target.stat().st_size),
        1: FileEntry(1, "/gone/other.bin", 10),
    }
    write_event_file(path, EventLog(ev, files, {"clock": "CLOCK_MONOTONIC"}))


def test_analyze_fixed_layout(
    rnd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.cmioev"
    mib = 1 << 20
    write_trace(
        trace,
        rnd,
        [
            (1000, Op.OPEN, -1, 0, 3),
            (2000, Op.PREAD, 0, 4096, 3),
            (3000, Op.PREAD, 2 * mib - 100, 200, 3),  # straddles chunks 3|4 of 512 KiB
            (4000, Op.PREAD, 0, 4096, 3),
        ],
    )
    # Two files have reads: --file is needed.
    rc, _, err = run_cli(["analyze", str(trace), "--layout", "fixed:512KiB"], capsys)
    assert rc == 2 and "2 files with reads" in err and "choose one with --file" in err
    j = tmp_path / "a.json"
    rc, out, _ = run_cli(
        [
            "analyze",
            str(trace),
            "--layout",
            "fixed:512KiB",
            "--file",
            str(rnd),
            "--rtt-ms",
            "5",
            "--bandwidth",
            "64MiB",
            "--json",
            str(j),
        ],
        capsys,
    )
    assert rc == 0, out
    doc = json.loads(j.read_text())["analysis"]
    assert doc["chunks_touched"] == [0, 3, 4]
    assert doc["first_touch_ns"] == [2000, 3000, 3000]
    assert doc["fetched_bytes"] == 3 * 512 * KIB
    assert doc["requested_bytes"] == 4096 * 2 + 200
    assert doc["unique_requested_bytes"] == 4096 + 200
    assert doc["fetch_time_ns"] == pytest.approx(3 * 5e6 + 1.5 / 64 * 1e9)
    assert re.search(r"\nchunks touched +3 of 6\n", out)
    # Unchunked (whole): the open fetches the 3 MiB file.
    rc, out, _ = run_cli(
        ["analyze", str(trace), "--layout", "whole", "--file", str(rnd), "--json", "-"], capsys
    )
    doc = json.loads(out[out.index('{\n "analysis"') :])["analysis"]
    assert doc["fetched_bytes"] == 3 << 20 and doc["first_touch_ns"] == [1000]


def test_analyze_errors(rnd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.cmioev"
    bad.write_bytes(b"CMIOEVT1" + b"\0" * 3)
    rc, _, err = run_cli(["analyze", str(bad), "--layout", "whole"], capsys)
    assert rc == 2 and "truncated header" in err
    trace = tmp_path / "t.cmioev"
    write_trace(trace, rnd, [(1, Op.READ, 0, 10, 3)])
    for args, msg in [
        (["--layout", "1M/512K/2M"], "min < avg < max"),
        (["--layout", "rabin:1/2/3"], "unknown chunker 'rabin'"),
        (["--layout", "fixed", "--rtt-ms", "-1"], "--rtt-ms: -1 is less than 0"),
        (
            ["--layout", "fixed", "--bandwidth", "fast"],
            "--bandwidth: cannot parse bandwidth 'fast'",
        ),
        (["--layout", "fixed", "--file", "/not/in/trace"], "no file '/not/in/trace'"),
        (["--layout", "fixed", "--file", "/gone/other.bin"], "is not here to chunk"),
        (["--layout", "nope"], "--layout: 'nope' is no file, and no chunker: "),
    ]:
        if "--file" not in args:
            args = [*args, "--file", str(rnd)]
        rc, _, err = run_cli(["analyze", str(trace), *args], capsys)
        assert rc == 2 and msg in err and err.count("\n") == 1, (args, err)


def test_sweep_trace_and_plain_file(
    rnd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(np.random.Generator(np.random.PCG64(22)).bytes(1 << 20))
    trace = tmp_path / "t.cmioev"
    write_trace(trace, rnd, [(10, Op.READ, 0, 100_000, 3), (20, Op.READ, 2_000_000, 10, 3)])
    j = tmp_path / "s.json"
    rc, out, _ = run_cli(
        [
            "sweep",
            str(trace),
            str(other),
            str(rnd),
            "--avg",
            "128KiB..512KiB",
            "--min-ratio",
            "0.25,0.5",
            "--json",
            str(j),
        ],
        capsys,
    )
    assert rc == 0
    assert f"note: {other}: no trace given, whole-file load assumed" in out
    assert f"note: {trace}: /gone/other.bin is not here to chunk; skipped" in out
    assert "corpus: 2 file(s)" in out and "6 configurations" in out
    doc = json.loads(j.read_text())
    assert len(doc["rows"]) == 6
    data, odata = rnd.read_bytes(), other.read_bytes()
    for row in doc["rows"]:
        mn, avg, mx = row["min_bytes"], row["avg_bytes"], row["max_bytes"]
        offs = _native.xor32_offsets(data, mn, avg, mx).tolist()
        bounds = [*offs, len(data)]
        touched = {
            i
            for i in range(len(offs))
            for a, b in [(0, 100_000), (2_000_000, 2_000_010)]
            if bounds[i] < b and a < bounds[i + 1]
        }
        fetched = sum(bounds[i + 1] - bounds[i] for i in touched) + len(odata)
        n_other = len(_native.xor32_offsets(odata, mn, avg, mx))
        assert row["fetched_bytes"] == fetched
        assert row["n_chunks"] == len(offs) + n_other
        assert row["requested_bytes"] == 100_010 + len(odata)
        assert row["amplification"] == pytest.approx(fetched / (100_010 + len(odata)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--avg", "16..1M"], "33 <= low <= high"),
        (["--avg", "1M", "--min-ratio", "0"], "--min-ratio: ratio must be positive"),
        (["--avg", "1M", "--max-ratio", "x"], "--max-ratio: cannot parse ratio 'x'"),
        (["--avg", "1M", "--min-ratio", "1"], "min < avg < max"),
        (["--avg", "64", "--min-ratio", "0.25"], "at least 32 bytes, got 16"),
    ],
)
def test_sweep_invalid(
    rnd: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run_cli(["sweep", str(rnd), *args], capsys)
    assert rc == 2 and message in err and err.count("\n") == 1


def test_dedup_versions_share_chunks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.Generator(np.random.PCG64(5))
    v0 = rng.bytes(2 << 20)
    v1 = v0[: 1 << 20] + rng.bytes(4096) + v0[(1 << 20) + 4096 :]  # 4 KiB changed in the middle
    a, b = tmp_path / "v0.bin", tmp_path / "v1.bin"
    a.write_bytes(v0)
    b.write_bytes(v1)
    j = tmp_path / "d.json"
    rc, out, _ = run_cli(
        [
            "dedup",
            str(a),
            str(b),
            "--config",
            "32KiB/64KiB/256KiB",
            "--config",
            "whole",
            "--json",
            str(j),
        ],
        capsys,
    )
    assert rc == 0
    res = json.loads(j.read_text())["results"]

    def objects(data: bytes) -> dict[str, int]:
        offs = [*_native.xor32_offsets(data, 32 * KIB, 64 * KIB, 256 * KIB).tolist(), len(data)]
        out = {}
        for s, e in itertools.pairwise(offs):
            z = zlib.compress(data[s:e], 6)
            out[hashlib.sha1(z).hexdigest()] = len(z)
        return out

    o0, o1 = objects(v0), objects(v1)
    union = {**o0, **o1}
    assert res[0]["n_objects"] == len(union)
    assert res[0]["stored_bytes"] == sum(union.values())
    assert res[0]["stored_bytes_no_dedup"] == sum(o0.values()) + sum(o1.values())
    new = {h: s for h, s in o1.items() if h not in o0}
    assert 1 <= len(new) <= 3  # content-defined: only the chunks around the change differ
    assert res[0]["updates"][0]["fetch_bytes"] == sum(new.values())
    assert res[0]["dedup_ratio"] > 1.5
    # Whole files: nothing shared, the update is the whole new file.
    assert res[1]["n_objects"] == 2 and res[1]["dedup_ratio"] == 1.0
    assert res[1]["updates"][0]["fetch_bytes"] == len(zlib.compress(v1, 6))
    assert "v0.bin -> v1.bin" in out


def test_dedup_real_particlenet_versions(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted((CMS_MODELS / "HLT" / "ParticleNetAK8").glob("V0*/*.onnx"))
    if len(files) != 3:
        pytest.fail(f"expected ParticleNetAK8 V00..V02 under {CMS_MODELS}")
    rc, out, _ = run_cli(["dedup", *map(str, files), "--json", "-"], capsys)
    assert rc == 0
    res = json.loads(out[out.index('{\n "command"') :])["results"][0]
    # Below the 4 MiB minimum: each version is one whole object, stored as zlib -6.
    sizes = [len(zlib.compress(f.read_bytes(), 6)) for f in files]
    assert res["n_objects"] == 3 and res["stored_bytes"] == sum(sizes)
    assert [u["fetch_bytes"] for u in res["updates"]] == sizes[1:]


def test_dedup_bad_config(rnd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cfg, msg in [
        ("4M/2M/8M", "min < avg < max"),
        ("fixed:0x", "cannot parse size"),
        ("whole:1M", "'whole' takes no sizes"),
        ("4M/8M", "expected MIN/AVG/MAX"),
    ]:
        rc, _, err = run_cli(["dedup", str(rnd), "--config", cfg], capsys)
        assert rc == 2 and msg in err and err.count("\n") == 1, (cfg, err)
        assert err.startswith("cvmfs-modelio: --config: "), err


@pytest.mark.parametrize("command", ["chunks", "dedup", "sweep", "analyze"])
def test_json_into_a_directory_or_missing_directory(
    rnd: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {
        "sweep": ["--avg", "1MiB"],
        "analyze": ["--layout", "whole", "--file", str(rnd)],
    }.get(command, [])
    target = str(rnd)
    if command == "analyze":
        target = str(tmp_path / "t.cmtr")
        write_trace(Path(target), rnd, [(1000, Op.OPEN, -1, 0, 3), (2000, Op.PREAD, 0, 4096, 3)])
    missing = tmp_path / "no" / "r.json"
    for dest, message in (
        (tmp_path, f"cvmfs-modelio: {tmp_path}: is a directory\n"),
        (missing, f"cvmfs-modelio: {missing}: directory {missing.parent} does not exist\n"),
    ):
        rc, out, err = run_cli([command, target, *extra, "--json", str(dest)], capsys)
        assert (rc, out, err) == (2, "", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.bin"] + (["t.cmtr"] if command == "analyze" else [])
    )


def test_sweep_refuses_a_fifo_without_blocking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    rc, out, err = run_cli(["sweep", str(fifo), "--avg", "1MiB"], capsys)
    assert (rc, out, err) == (2, "", f"cvmfs-modelio: {fifo}: not a regular file\n")


def test_sweep_of_an_empty_file_writes_strict_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    out = tmp_path / "s.json"
    rc, _, _ = run_cli(["sweep", str(empty), "--avg", "1MiB", "--json", str(out)], capsys)
    assert rc == 0

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    doc = json.loads(out.read_text(), parse_constant=no_constants)
    (row,) = doc["rows"]
    assert row["requested_bytes"] == 0 and row["fetched_bytes"] == 0
    assert row["amplification"] is None


def test_sweep_of_a_real_trace_skips_a_file_that_changed_since(tmp_path: Path) -> None:
    """A trace without --match holds every file the program read; one that grew since
    (as ONNX Runtime's cache database does) is skipped with a note, not fatal (issue 8)."""
    model = tmp_path / "m.bin"
    model.write_bytes(np.random.Generator(np.random.PCG64(5)).bytes(2 << 20))
    db = tmp_path / "cache.db"
    db.write_bytes(b"x" * 294912)
    prog = f"open({str(model)!r}, 'rb').read(); open({str(db)!r}, 'rb').read()"
    trace = tmp_path / "trace"
    cli = [sys.executable, "-m", "cvmfs_modelio.cli"]
    subprocess.run([*cli, "trace", "-o", str(trace), "--", sys.executable, "-c", prog], check=True)
    with open(db, "ab") as f:
        f.write(b"y" * (331776 - 294912))
    out = tmp_path / "s.json"
    r = subprocess.run(
        [*cli, "sweep", str(trace), "--avg", "512KiB", "--json", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert f"note: {trace}: {db} was 294912 bytes when traced, now 331776; skipped" in r.stdout
    doc = json.loads(out.read_text())
    paths = [f["path"] for f in doc["files"]]
    assert str(model) in paths and str(db) not in paths
    # Without --match the program's other reads (Python itself) are in the corpus too.
    assert len(paths) > 1


def test_sweep_with_nothing_left_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"z" * 100_000)
    trace = tmp_path / "t.cmioev"
    write_trace(trace, f, [(10, Op.READ, 0, 1000, 3)])
    f.write_bytes(b"z" * 100_001)
    rc, out, err = run_cli(["sweep", str(trace), "--avg", "64KiB"], capsys)
    assert rc == 2
    assert f"note: {trace}: {f} was 100000 bytes when traced, now 100001; skipped" in out
    assert err == "cvmfs-modelio: sweep: no file left to analyse (see the notes above)\n"
