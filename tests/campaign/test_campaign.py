"""The campaign (experiments.py) on real emulated-CVMFS mounts (root, FUSE); the demo is in
tests/cli/test_demo.py."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmfs_modelio.campaign.experiments import (
    FUSE_DEVICE_ENV,
    CampaignParams,
    ChunkConfig,
    model_from_path,
    parse_configs,
    run_campaign,
    unique_names,
)
from cvmfs_modelio.chunks.layouts import ChunkSpec, Layout, compute_layout, whole_layout
from cvmfs_modelio.cli import main
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.synthetic import make_model
from tests.conftest import CMS_MODELS

MiB = 1 << 20


def stored_objects(path: Path, layout: Layout) -> list[tuple[str, int]]:
    """(SHA-1, stored bytes) of each chunk as CVMFS stores it: a zlib level 6 stream."""
    out = []
    data = path.read_bytes()
    for off, size in zip(layout.offsets.tolist(), layout.sizes.tolist(), strict=True):
        comp = zlib.compressobj(6)
        piece = data[off : off + size]
        blob = b"".join(comp.compress(piece[i : i + MiB]) for i in range(0, size, MiB))
        blob += comp.flush()
        out.append((hashlib.sha1(blob).hexdigest(), len(blob)))
    return out


def test_cold_load_fetches_exactly_the_chunks_ort_read(tmp_path: Path) -> None:
    m = make_model(tmp_path / "m" / "ext.onnx", 6 * MiB, external_data=True, width=512, seed=3)
    assert m.data is not None
    params = CampaignParams(
        configs=(ChunkConfig.chunked(MiB, 2 * MiB, 4 * MiB), ChunkConfig.whole()),
        rtt_ms=2.0,
        bandwidth=200 * MiB,
        reps=2,
        trace=True,
    )
    msgs: list[str] = []
    rows = run_campaign([model_from_path(m.onnx)], params, msgs.append)
    assert [(r.model, r.config) for r in rows] == [("ext", "1/2/4 MiB"), ("ext", "unchunked")]
    assert msgs[0] == "publishing [1/2/4 MiB]"
    assert "ext [1/2/4 MiB] cold 2/2" in msgs
    onnx_obj = stored_objects(m.onnx, whole_layout(m.onnx.stat().st_size))
    spec = ChunkSpec(min_size=MiB, avg_size=2 * MiB, max_size=4 * MiB)
    data_layouts = [compute_layout(m.data, spec), whole_layout(m.data.stat().st_size)]
    for row, data_layout in zip(rows, data_layouts, strict=True):
        data_obj = stored_objects(m.data, data_layout)
        onnx_f, data_f = row.files
        assert (onnx_f.path, data_f.path) == ("/ext/ext.onnx", "/ext/ext.onnx.data")
        assert (
            onnx_f.size_bytes == m.onnx.stat().st_size
            and data_f.size_bytes == m.data.stat().st_size
        )
        # The .onnx is fetched whole at open; prepacking reads every chunk of the .data.
        assert onnx_f.chunks == 1 and onnx_f.chunks_fetched_cold == [0]
        assert data_f.chunks == data_layout.n_chunks
        every = list(range(data_layout.n_chunks))
        assert data_f.chunks_fetched_cold == every and data_f.chunks_touched == every
        assert onnx_f.chunks_touched == [0]
        assert row.chunks_total == row.chunks_fetched == row.chunks_touched == 1 + len(every)
        # Each object exactly once, on the wire as stored (zlib), in every cold repetition.
        want_bytes = sum(n for _h, n in onnx_obj + data_obj)
        assert data_f.stored_bytes == sum(n for _h, n in data_obj)
        cold = [r for r in row.runs if r.cache == "cold"]
        warm = [r for r in row.runs if r.cache == "warm"]
        assert len(cold) == len(warm) == 2
        assert [r.objects_fetched for r in cold] == [row.chunks_total] * 2
        assert [r.fetched_bytes for r in cold] == [want_bytes] * 2
        assert row.objects_fetched == row.chunks_total
        assert row.fetched_bytes == row.expected_bytes == want_bytes
        # Warm: client cache hot, page cache dropped: nothing on the network.
        assert [(r.objects_fetched, r.fetched_bytes) for r in warm] == [(0, 0)] * 2
        assert row.warm_objects_fetched == row.warm_fetched_bytes == 0
        assert all(r.session_ns > 0 and r.first_inference_ns > 0 for r in row.runs)
    assert rows[0].chunks_total > 2  # the chunked store really cut the .data
    # Campaigns price objects as the real client: the mount said which profile it ran.
    assert [r.client_profile for r in rows] == ["cvmfs-2.12"] * 2
    assert all(r.to_dict()["client_profile"] == "cvmfs-2.12" for r in rows)


def test_experiment_on_a_real_cms_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # ParticleNet needs more than a few particles (TopK k=16): symbolic dims are filled.
    model = CMS_MODELS / "HLT" / "ParticleNetAK4" / "V01" / "particle-net.onnx"
    out = tmp_path / "exp.json"
    argv = ["experiment", "--models", str(model), "--configs", "whole", "--reps", "1"]
    rc = main([*argv, "--rtt-ms", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert text.startswith("ONNX Runtime from emulated CVMFS: RTT 1 ms, 100.0 MiB/s, medians of 1")
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    (want,) = stored_objects(model, whole_layout(model.stat().st_size))
    assert (row["model"], row["config"]) == ("particle-net", "unchunked")
    assert row["model_bytes"] == model.stat().st_size
    assert (row["objects_fetched"], row["fetched_bytes"]) == (1, want[1])
    assert (row["warm_objects_fetched"], row["warm_fetched_bytes"]) == (0, 0)
    assert (
        doc["campaign"]["bandwidth_bytes_per_s"] == 100 * MiB and doc["campaign"]["rtt_ms"] == 1.0
    )
    assert doc["campaign"]["client_profile"] == row["client_profile"] == "cvmfs-2.12"
    assert "kernel" in doc["environment"]


def test_without_fuse_experiment_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-fuse"
    monkeypatch.setenv(FUSE_DEVICE_ENV, str(missing))
    reason = f"{missing} does not exist (no FUSE in this kernel or container)"
    assert main(["experiment", "--size", "4MiB"]) == 2
    err = capsys.readouterr().err
    assert err == f"cvmfs-modelio: experiment: cannot mount the emulated CVMFS: {reason}\n"


def test_parse_configs() -> None:
    got = parse_configs("4MiB/8MiB/16MiB, 1M/2M/4M ,whole")
    assert [c.label for c in got] == ["4/8/16 MiB", "1/2/4 MiB", "unchunked"]
    assert (got[1].min_size, got[1].avg_size, got[1].max_size) == (MiB, 2 * MiB, 4 * MiB)
    assert got[2].chunking is False
    assert parse_configs("16KiB/32KiB/64KiB")[0].label == "16.0KiB/32.0KiB/64.0KiB"
    with pytest.raises(
        UsageError, match=r"^--configs: xor32 chunk sizes: expected MIN/AVG/MAX, got '4M/8M'$"
    ):
        parse_configs("4M/8M")
    with pytest.raises(UsageError, match=r"^--configs: 'whole,unchunked' names a configuration"):
        parse_configs("whole,unchunked")
    with pytest.raises(UsageError, match=r"^--configs: empty entry in 'whole,'$"):
        parse_configs("whole,")


@given(st.text(max_size=40))
def test_parse_configs_hostile_input(text: str) -> None:
    try:
        configs = parse_configs(text)
    except UsageError as e:
        assert "\n" not in str(e).strip() or "\n" in text
        return
    assert configs and all(c.label for c in configs)


def test_model_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no-such\.onnx: no such file or directory$"):
        model_from_path(tmp_path / "no-such.onnx")
    with pytest.raises(UsageError, match=r": is a directory \(give the \.onnx files\)$"):
        model_from_path(tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00garbage")
    with pytest.raises(UsageError, match=r"bad\.onnx: not a readable ONNX model"):
        model_from_path(bad)
    m = make_model(tmp_path / "e.onnx", 4 * MiB, external_data=True, width=512)
    assert m.data is not None
    m.data.unlink()
    with pytest.raises(UsageError, match=r"e\.onnx: external data file e\.onnx\.data not found$"):
        model_from_path(m.onnx)


def test_unique_names_for_models_of_the_same_name() -> None:
    ak4 = CMS_MODELS / "HLT" / "ParticleNetAK4"
    paths = [ak4 / "V00" / "particle-net.onnx", ak4 / "V01" / "particle-net.onnx"]
    paths.append(CMS_MODELS / "DeepDoubleX" / "102X" / "V02" / "BvL.onnx")
    got = unique_names([model_from_path(p) for p in paths])
    assert [m.name for m in got] == ["V00-particle-net", "V01-particle-net", "BvL"]
