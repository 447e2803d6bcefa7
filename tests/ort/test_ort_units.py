"""The pieces of ort-load on their own: tensor maps, ORT profile/log alignment, the streamer's
ranges, the CLI's output files."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmfs_modelio.models.inspect import TensorSpan, build_map, inspect_model
from cvmfs_modelio.ort.loaders.streamer import ranges
from cvmfs_modelio.ort.profile import LOG_TOLERANCE_NS, ort_phases, parse_log, parse_log_time
from tests.ort.conftest import Models

CLI = [sys.executable, "-m", "cvmfs_modelio.cli"]


def test_tensor_map_of_embedded_onnx_points_at_each_initializers_bytes(models: Models) -> None:
    m = inspect_model(models.embedded)
    model = onnx.load(str(models.embedded))
    raw = models.embedded.read_bytes()
    by_name = {t.name: t for t in m.tensors}
    assert set(by_name) == {t.name for t in model.graph.initializer}
    for t in model.graph.initializer:
        s = by_name[t.name]
        assert raw[s.offset_bytes : s.end_bytes] == t.raw_data
        assert s.dtype == "float32" and s.shape == tuple(t.dims)
        assert s.file == os.path.realpath(models.embedded)


def test_tensor_maps_of_external_data_and_safetensors_agree(models: Models) -> None:
    ext = {t.name: t for t in inspect_model(models.external).tensors}
    st_ = {t.name: t for t in inspect_model(models.safetensors).tensors}
    assert set(ext) == set(st_)
    data, stb = models.data.read_bytes(), models.safetensors.read_bytes()
    for name in ext:
        a, b = ext[name], st_[name]
        assert a.file == os.path.realpath(models.data)
        assert data[a.offset_bytes : a.end_bytes] == stb[b.offset_bytes : b.end_bytes]
        assert (a.dtype, a.shape, a.length_bytes) == (b.dtype, b.shape, b.length_bytes)


def test_tensors_in_finds_exactly_the_overlapping_tensors(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(bytes(1000))
    spans = tuple(TensorSpan(f"t{i}", "float32", (4,), str(f), 100 * i, 50) for i in range(5))
    m = build_map("test", f, [f], spans)
    assert [s.name for s in m.tensors_in(str(f), 0, 1)] == ["t0"]
    assert [s.name for s in m.tensors_in(str(f), 49, 52)] == ["t0", "t1"]  # 49..101
    assert m.tensors_in(str(f), 50, 50) == []  # the gap between t0 and t1
    assert [s.name for s in m.tensors_in(str(f), 0, 1000)] == [f"t{i}" for i in range(5)]
    assert m.tensors_in("/other", 0, 1000) == [] and m.tensors_in(str(f), 0, 0) == []


@given(st.integers(0, 10**12), st.integers(1, 10**12), st.integers(1, 64))
def test_streamer_ranges_tile_the_data_region(start: int, size: int, n: int) -> None:
    parts = ranges(start, start + size, n)
    assert parts[0][0] == start and parts[-1][1] == start + size
    assert all(a < b for a, b in parts) and len(parts) == min(n, size)
    assert all(parts[i][1] == parts[i + 1][0] for i in range(len(parts) - 1))
    lens = [b - a for a, b in parts]
    assert max(lens) - min(lens) <= 1


def test_log_time_is_local_time_with_nanoseconds() -> None:
    t = time.time_ns()
    lt = time.localtime(t // 1_000_000_000)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", lt)
    frac = f"{t % 1_000_000_000:09d}"
    assert parse_log_time(stamp, frac) == t
    line = f"{stamp}.{frac} [I:onnxruntime:, inference_session.cc:1 f] Initializing session."
    assert parse_log(f"noise\n{line}\n") == [(t, "I", "Initializing session.")]


def runner_doc(
    tmp: Path, offset: int, session: tuple[int, int], init_ts_us: int
) -> dict[str, object]:
    """A runner result whose profile starts 10 µs into the session (CLOCK_REALTIME)."""
    start_rt = session[0] + 10_000 + offset
    prof = tmp / "p.json"
    prof.write_text(
        json.dumps(
            [
                {"cat": "Session", "ph": "X", "name": "model_loading_uri", "ts": 2, "dur": 100},
                {
                    "cat": "Session",
                    "ph": "X",
                    "name": "session_initialization",
                    "ts": init_ts_us,
                    "dur": 5000,
                },
            ]
        )
    )
    return {
        "marks": [{"name": "session", "start_ns": session[0], "end_ns": session[1]}],
        "clock": {"realtime_minus_monotonic_ns": offset},
        "profile_file": str(prof),
        "profiling_start_realtime_ns": start_rt,
    }


def log_line(rt_ns: int, msg: str) -> str:
    lt = time.localtime(rt_ns // 1_000_000_000)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", lt)
    return f"{stamp}.{rt_ns % 1_000_000_000:09d} [I:onnxruntime:, x.cc:1 f] {msg}"


def test_profile_and_log_are_aligned_to_the_monotonic_clock(tmp_path: Path) -> None:
    offset = 1_700_000_000_000_000_000 - 5_000_000_000
    session = (5_000_000_000, 5_010_000_000)
    doc = runner_doc(tmp_path, offset, session, 200)
    base = session[0] + 10_000  # the profiler's start, monotonic
    init0 = base + 200_000
    stamps = [init0 + 1000, init0 + 2_000_000, init0 + 3_000_000, init0 + 4_999_000]
    msgs = [
        "Initializing session.",
        "Saving initialized tensors.",
        "Done saving initialized tensors",
        "Session successfully initialized.",
    ]
    log = "\n".join(log_line(s + offset, m) for s, m in zip(stamps, msgs, strict=True))
    notes: list[str] = []
    phases, _ = ort_phases(doc, log, notes)
    got = {p.name: (p.depth, p.start_ns, p.end_ns, p.source) for p in phases}
    assert notes == []
    assert got["model_loading_uri"] == (1, base + 2000, base + 102_000, "profile")
    assert got["session_initialization"] == (1, init0, init0 + 5_000_000, "profile")
    assert got["graph_and_kernels"] == (2, stamps[0], stamps[1], "log")
    assert got["save_initializers"] == (2, stamps[1], stamps[2], "log")
    assert got["prepack_and_finalize"] == (2, stamps[2], stamps[3], "log")


def test_a_log_in_another_time_zone_is_dropped_with_a_note(tmp_path: Path) -> None:
    offset = 1_700_000_000_000_000_000 - 5_000_000_000
    session = (5_000_000_000, 5_010_000_000)
    doc = runner_doc(tmp_path, offset, session, 200)
    init0 = session[0] + 10_000 + 200_000
    shifted = init0 + offset + 3600 * 10**9  # an hour off: the log's local time is not ours
    log = "\n".join(
        log_line(shifted + k * 1000, m)
        for k, m in enumerate(
            [
                "Initializing session.",
                "Saving initialized tensors.",
                "Done saving initialized tensors",
                "Session successfully initialized.",
            ]
        )
    )
    notes: list[str] = []
    phases, _ = ort_phases(doc, log, notes)
    assert [p.name for p in phases if p.depth == 2] == []
    assert len(notes) == 1 and "do not agree with its profile" in notes[0]
    assert LOG_TOLERANCE_NS < 3600 * 10**9


def test_a_profile_that_does_not_line_up_is_dropped(tmp_path: Path) -> None:
    offset = 1_700_000_000_000_000_000
    doc = runner_doc(tmp_path, offset, (5_000_000_000, 5_010_000_000), 200)
    doc["profiling_start_realtime_ns"] = int(doc["profiling_start_realtime_ns"]) + 10**9  # type: ignore[call-overload]
    notes: list[str] = []
    phases, _ = ort_phases(doc, "", notes)
    assert [p.name for p in phases] == ["session"]
    assert "does not line up" in notes[0]


def test_cli_writes_json_and_a_timeline(models: Models, tmp_path: Path) -> None:
    out, chrome = tmp_path / "load.json", tmp_path / "tl.json"
    r = subprocess.run(
        [
            *CLI,
            "ort-load",
            str(models.external),
            "--state",
            "warm",
            "--repeat",
            "2",
            "--json",
            str(out),
            "--chrome",
            str(chrome),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["phase", "wall", "read()"]
    for name in (
        "session",
        "model_loading_uri",
        "session_initialization",
        "first_run",
        "second_run",
    ):
        assert any(ln.strip().startswith(name + " ") for ln in lines), name
    assert any(
        ln.startswith(f"{models.external}: ort, warm, local, medians of 2 run(s)") for ln in lines
    )
    doc = json.loads(out.read_text())
    assert doc["schema"]["name"] == "cvmfs-modelio.ort-load"
    assert len(doc["runs"]) == 2 and doc["model"] == str(models.external)
    assert {p["name"] for p in doc["medians"]} >= {"session", "first_run", "second_run"}
    assert all(isinstance(p["wall_ns"], int) for p in doc["medians"])
    tl = json.loads(chrome.read_text())
    assert any(e.get("cat") == "phase" and e["name"] == "first_run" for e in tl["traceEvents"])


def test_kernel_decoder_rejects_damaged_pages(tmp_path: Path) -> None:
    from cvmfs_modelio.core.events import EventFileError
    from cvmfs_modelio.trace.kernel import decode_pages

    page = bytearray(4096)
    struct.pack_into("<Qq", page, 0, 1000, 5000)  # claims more than a page holds
    with pytest.raises(EventFileError, match="claims 5000 bytes"):
        decode_pages(bytes(page), 4096, "cpu0.raw")
    with pytest.raises(EventFileError, match="not whole 4096-byte pages"):
        decode_pages(b"x" * 100, 4096, "cpu0.raw")


@given(st.integers(0, (1 << 32) - 1), st.binary(max_size=300))
def test_kernel_decoder_never_raises_anything_else(commit: int, body: bytes) -> None:
    from cvmfs_modelio.core.events import EventFileError
    from cvmfs_modelio.trace.kernel import decode_pages

    data = struct.pack("<Qq", 7, commit) + body
    data += bytes(4096 - len(data))
    try:
        recs, _ = decode_pages(data, 4096, "x")
    except EventFileError:
        return
    assert all(isinstance(t, int) and len(p) >= 8 for t, p in recs)


def test_kernel_decoder_reads_time_extends_and_missed_flags() -> None:
    from cvmfs_modelio.trace.kernel import decode_pages

    page = bytearray(4096)
    body = bytearray()
    # record 1: type_len 2 (8 bytes of payload), delta 5
    body += struct.pack("<I", (5 << 5) | 2) + b"A" * 8
    # time extend by (3 << 27) + 7
    body += struct.pack("<II", (7 << 5) | 30, 3)
    # record 2: type_len 0, length in array[0] (12 bytes: 8 payload + 4 for itself), delta 1
    body += struct.pack("<II", (1 << 5) | 0, 12) + b"B" * 8
    struct.pack_into("<Qq", page, 0, 1_000, len(body) | (1 << 31))
    page[16 : 16 + len(body)] = body
    recs, missed = decode_pages(bytes(page), 4096, "p")
    assert missed == 1
    assert recs == [(1_005, b"A" * 8), (1_005 + (3 << 27) + 7 + 1, b"B" * 8)]
    assert np.int64(recs[1][0]) > 0
