"""The probe on real CMS models and on the demo's synthetic ONNX models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cvmfs_modelio.cli.demo import HEADER, WORKLOADS, Workload, format_rows, run_demo
from cvmfs_modelio.probe import probe
from cvmfs_modelio.probe.engine import PAGE_SIZE
from tests.probe.probe_reference import reference_plan


def test_probe_every_cms_model(cms_models: list[Path]) -> None:
    assert len(cms_models) >= 3
    for m in cms_models:
        size = m.stat().st_size
        # CI copies shared/ just before the run: flush any dirty pages of the copy, which
        # DONTNEED cannot drop (the probe would rightly report the eviction as failed).
        fd = os.open(m, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        s = probe(m, "seq", block=64 * 1024, cold=True, verify="file").summary
        assert s.bytes == size and s.verify_bad_bytes == 0 and s.failed_ops == 0
        assert s.residency_before == 0 and s.cold_evicted is True
        assert s.residency_after == (size + PAGE_SIZE - 1) // PAGE_SIZE
        mm = probe(m, "mmap-seq", verify="file", faults=True)
        assert mm.summary.bytes == size and mm.summary.verify_bad_bytes == 0
        assert mm.summary.majflt == 0  # the seq run above left it all in the page cache
        block = min(4096, size)
        r = probe(m, "rand", block=block, count=200, seed=1, verify="file")
        want = reference_plan("rand", size, block=block, count=200, align=block, seed=1)
        assert [(int(o), int(n)) for o, n in r.events[["offset", "length"]].tolist()] == want
        assert r.summary.verify_bad_bytes == 0


def test_demo_rows(tmp_path: Path) -> None:
    rows = run_demo(tmp_path, weight_bytes=4 << 20)
    files = ["embedded.onnx", "external.onnx", "external.onnx.data"]
    assert [(r.file, r.workload, r.cache) for r in rows] == [
        (f, w.label, c) for f in files for w in WORKLOADS for c in ("cold", "warm")
    ]
    for r in rows:
        s = r.summary
        assert s.file_size == (tmp_path / r.file).stat().st_size == r.file_size
        assert s.failed_ops == 0
        if r.cache == "cold":
            assert s.residency_before == 0 and s.cold_evicted is True
        if r.workload == "seq 1MiB":
            assert s.bytes == r.file_size
    text = format_rows(rows).splitlines()
    assert text[0].split()[:4] == list(HEADER[:4])
    assert len(text) == 2 + len(rows)


def test_demo_workloads_are_customisable(tmp_path: Path) -> None:
    rows = run_demo(tmp_path, weight_bytes=4 << 20, workloads=[Workload("rev", "reverse", 1 << 16)])
    assert len(rows) == 6 and {r.summary.pattern for r in rows} == {"reverse"}


def test_demo_command_runs_and_prints_the_probe_table(tmp_path: Path) -> None:
    # The emulated-CVMFS table of the demo is tested in test_campaign.py.
    out = tmp_path / "demo.json"
    r = subprocess.run(
        [sys.executable, "-m", "cvmfs_modelio.cli", "demo", "--no-cvmfs", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Local disk: probe patterns, page cache cold and warm"
    assert lines[1].split()[:4] == ["file", "size", "workload", "cache"]
    assert lines[-2:] == ["", "Emulated CVMFS: not run: --no-cvmfs given"]
    assert len(lines) == 1 + 2 + 18 + 2
    assert sum("24.0 MiB" in line for line in lines) == 12  # embedded.onnx and the .data file
    assert out.exists()
