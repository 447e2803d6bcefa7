"""``cvmfs-modelio run`` on real emulated-CVMFS mounts (root, FUSE): what a campaign
measures, exactly, and that killing it (SIGINT, SIGKILL) loses nothing and repeats nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest

from cvmfs_modelio.campaign.store import ResultsStore
from cvmfs_modelio.chunks.layouts import ChunkSpec, compute_layout
from cvmfs_modelio.cli import main
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.sim.mount import mounts

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "bench" / "campaigns" / "quick.toml"
MiB = 1 << 20

KILL_CAMPAIGN = """
[campaign]
name = "kill"
reps = 3
[[models]]
kind = "synthetic"
name = "m"
size = "4MiB"
width = 512
external_data = true
[matrix]
chunking = ["1MiB/2MiB/4MiB", "whole"]
rtt_ms = [2]
bandwidth = ["200MiB"]
"""


def expected_objects(path: Path, spec: ChunkSpec) -> list[tuple[str, int]]:
    """(SHA-1, stored bytes) per chunk, as the CVMFS publisher stores it (zlib level 6)."""
    lay = compute_layout(path, spec)
    data = path.read_bytes()
    out = []
    for off, size in zip(lay.offsets.tolist(), lay.sizes.tolist(), strict=True):
        blob = zlib.compress(data[off : off + size], 6)
        out.append((hashlib.sha1(blob).hexdigest(), len(blob)))
    return out


def mounts_under(d: Path) -> list[str]:
    root = str(d.resolve()) + "/"
    return [mp for mp, _t, _s in mounts() if (mp + "/").startswith(root)]


def test_quick_campaign_measures_exactly_what_each_state_fetches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, work = tmp_path / "r", tmp_path / "w"
    work.mkdir()
    assert main(["run", str(QUICK), "-o", str(results), "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert (
        "campaign quick: 3 cells, 6 measurements declared; 0 were in the store, 6 measured" in out
    )
    assert list(work.iterdir()) == [] and mounts_under(work) == []

    # the same model, regenerated from its declared parameters, gives the expected objects
    ref = make_model(tmp_path / "ref" / "external.onnx", 4 * MiB, external_data=True, width=512)
    assert ref.data is not None
    onnx_obj = expected_objects(ref.onnx, ChunkSpec(kind="whole"))
    data_objs = expected_objects(ref.data, ChunkSpec("xor32", MiB, 2 * MiB, 4 * MiB))
    assert len(data_objs) == 4

    store = ResultsStore.open(results)
    df = store.measurements()
    assert len(df) == 6 and len(pd.read_parquet(results / "measurements")) == 6
    assert sorted(df.groupby("cell_key")["rep"].apply(sorted).tolist()) == [[0, 1]] * 3
    assert set(df["client_profile"]) == {"cvmfs-2.12"}
    assert df["ok"].all() and (df["error"] == "").all()
    assert (df["chunks_total"] == 5).all() and (df["objects_total"] == 5).all()
    assert (df["model_bytes"] == ref.onnx.stat().st_size + ref.data.stat().st_size).all()
    assert set(df["model_format"]) == {"onnx-external"} and set(df["model_family"]) == {"mlp"}
    assert (df["time_to_first_inference_ns"] == df["session_ns"] + df["first_inference_ns"]).all()
    assert (df["wall_ns"] > df["time_to_first_inference_ns"]).all()
    env = json.loads(df["environment_json"].iloc[0])
    assert env["root"] is True and env["file_systems"][0]["fs_type"] == "fuse.cmio-simfs"

    cold = df[df["cache_state"] == "cold"]
    assert cold["cold_verified"].all() and cold["state_verified"].all()
    assert (cold["resident_bytes_before"] == 0).all() and (cold["cached_objects_before"] == 0).all()
    assert (cold["objects_fetched"] == 5).all()
    stored = sum(n for _h, n in onnx_obj + data_objs)
    # bytes on the wire are the stored (compressed) objects, exactly
    assert (cold["bytes_fetched"] == stored).all()
    assert (cold["chunks_touched"] == 5).all()
    warm = df[df["cache_state"] == "warm"]
    assert not warm["cold_verified"].any() and warm["state_verified"].all()
    assert (warm["objects_fetched"] == 0).all() and (warm["cached_objects_before"] == 5).all()
    assert (warm["resident_bytes_before"] == 0).all() and (warm["fuse_reads"] > 0).all()
    hot = df[df["cache_state"] == "hot"]
    assert hot["state_verified"].all() and not hot["cold_verified"].any()
    assert (hot["objects_fetched"] == 0).all() and (hot["fuse_reads"] == 0).all()
    assert (hot["resident_bytes_before"] == df["model_bytes"].iloc[0]).all()
    assert not df["primed"].any()  # warm followed cold in one mount

    fe = store.fetches()
    for mid in cold["measurement_id"]:
        f = fe[fe["measurement_id"] == mid].sort_values("seq")
        assert f["seq"].tolist() == list(range(5))
        got = list(zip(f["object"], f["compressed_bytes"], strict=True))
        # ORT opens the .onnx first (fetched whole at open), then pages the data in order
        assert got == onnx_obj + data_objs
        assert f["kind"].tolist() == ["whole"] + ["chunk"] * 4
        assert (
            f["file"].tolist()
            == ["/tiny-external/external.onnx"] + ["/tiny-external/external.onnx.data"] * 4
        )
        assert f["chunk_index"].tolist() == [0, 0, 1, 2, 3]
        assert f["ok"].all() and (f["http_status"] == 200).all()
        assert (f["rtt_ns"] == 2_000_000).all() and (f["bandwidth_bytes_per_s"] == 200 * MiB).all()
        assert (f["start_ns"] > 0).all() and (f["duration_ns"] >= 2_000_000).all()
    assert set(fe["measurement_id"]) == set(cold["measurement_id"])
    ac = store.accesses()
    first = ac[ac["measurement_id"] == cold["measurement_id"].iloc[0]].sort_values(
        "first_touch_seq"
    )
    assert first["chunk_index"].tolist() == [0, 0, 1, 2, 3]
    assert first["bytes"].sum() == df["model_bytes"].iloc[0]

    # a second run without --resume refuses, with it measures nothing
    parts = sorted(p.name for p in (results / "measurements").iterdir())
    assert main(["run", str(QUICK), "-o", str(results), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"cvmfs-modelio: {results}: already holds 6 measurements of campaign 'quick'; "
        f"add --resume to continue it, or choose another -o\n"
    )
    assert main(["run", str(QUICK), "-o", str(results), "--resume", "--workdir", str(work)]) == 0
    assert "6 were in the store, 0 measured now" in capsys.readouterr().out
    assert sorted(p.name for p in (results / "measurements").iterdir()) == parts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_run_resumes_without_repeating_or_losing_a_measurement(
    tmp_path: Path, sig: signal.Signals
) -> None:
    camp = tmp_path / "kill.toml"
    camp.write_text(KILL_CAMPAIGN)
    results, work = tmp_path / "r", tmp_path / "w"
    work.mkdir()
    argv = [sys.executable, "-m", "cvmfs_modelio.cli", "run", str(camp), "-o", str(results)]
    argv += ["--workdir", str(work)]
    # series of 9 (3 states x 3 reps): SIGINT in the first series, SIGKILL in the second
    marker = "[ 4/18" if sig == signal.SIGINT else "[11/18"
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(marker):
            proc.send_signal(sig)
            break
    else:
        pytest.fail(f"no {marker} line: {lines}")
    rest = proc.stderr.read()
    rc = proc.wait(timeout=120)
    assert proc.stdout is not None
    proc.stdout.close()
    proc.stderr.close()

    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
        # the guardian unmounts and removes the run's scratch directory; a client caught
        # in a fetch from the killed run's stratum first gives up after its timeout x
        # attempts (2 x 10 s direct), hence the generous deadline
        deadline = time.monotonic() + 60
        while (mounts_under(work) or list(work.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.1)
    left = sorted(str(q.relative_to(work)) for q in work.rglob("*"))
    ps = subprocess.run(["ps", "-eo", "pid,stat,etime,args"], capture_output=True, text=True)
    assert mounts_under(work) == [], mounts_under(work)
    assert left == [], (
        left,
        [ln for ln in ps.stdout.splitlines() if "cvmfs" in ln or "cmio" in ln],
    )
    stray = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout
    assert stray == ""

    before = ResultsStore.open(results).measurements()
    n = len(before)
    if sig == signal.SIGINT:
        assert rc == 130
        # the interrupted series' finished measurements are kept (4 done when the line
        # for the 5th was printed; the 5th itself is lost)
        assert 4 <= n < 9
        assert rest.splitlines()[-1] == (
            f"cvmfs-modelio: interrupted: {n} of 18 measurements are in {results}; "
            f"`cvmfs-modelio run {camp} -o {results} --resume` measures the other {18 - n}"
        )
    else:
        assert n == 9  # the first series was committed; the second was in flight
    assert before["ok"].all()

    r = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{n} were in the store, {18 - n} measured now (0 failed), 0 missing" in r.stdout
    after = ResultsStore.open(results).measurements(dedupe=False)
    assert len(after) == 18
    assert after.groupby(["cell_key", "rep"]).size().eq(1).all()
    assert after.groupby("cell_key").size().eq(3).all() and after["cell_key"].nunique() == 6
    assert set(before["measurement_id"]) <= set(after["measurement_id"])
    resumed = after[~after["measurement_id"].isin(before["measurement_id"])]
    # a resumed series that starts with warm or hot is primed first, never measured unprimed
    first = resumed.sort_values("series_index").groupby(["chunk_label", "model", "loader"]).head(1)
    assert ((first["cache_state"] == "cold") | first["primed"]).all()
    if sig == signal.SIGINT:  # the first series was resumed at warm: primed once, then not
        assert first["primed"].sum() == 1 and resumed["primed"].sum() == 1
    cold = after[after["cache_state"] == "cold"]
    assert cold["cold_verified"].all()
    left = sorted(str(q.relative_to(work)) for q in work.rglob("*"))
    ps = subprocess.run(["ps", "-eo", "pid,stat,etime,args"], capture_output=True, text=True)
    assert mounts_under(work) == [], mounts_under(work)
    assert left == [], (
        left,
        [ln for ln in ps.stdout.splitlines() if "cvmfs" in ln or "cmio" in ln],
    )


def test_campaign_on_local_disk_with_probe_loaders(tmp_path: Path) -> None:
    camp = tmp_path / "local.toml"
    camp.write_text(
        """
[campaign]
name = "local"
reps = 2
[[models]]
kind = "synthetic"
size = "4MiB"
width = 512
external_data = true
[target]
kind = "local"
[matrix]
loader = ["probe-seq", "ort-noprepack"]
"""
    )
    assert main(["run", str(camp), "-o", str(tmp_path / "r")]) == 0
    df = ResultsStore.open(tmp_path / "r").measurements()
    assert len(df) == 2 * 3 * 2 and df["ok"].all()
    assert set(df["target"]) == {"local"} and set(df["client_profile"]) == {"none"}
    assert (df["rtt_ns"] == -1).all() and (df["bandwidth_bytes_per_s"] == -1).all()
    assert (df["objects_fetched"] == 0).all() and (df["fuse_reads"] == -1).all()
    cold = df[df["cache_state"] == "cold"]
    assert cold["cold_verified"].all() and (cold["resident_bytes_before"] == 0).all()
    probe = df[df["loader"] == "probe-seq"]
    assert (probe["bytes_requested"] == probe["model_bytes"]).all()
    assert (probe["session_ns"] == 0).all() and (probe["time_to_first_inference_ns"] > 0).all()
    hot = df[df["cache_state"] == "hot"]
    assert hot["state_verified"].all()


def test_bad_stores_and_machines_are_one_line_and_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "r"
    store = ResultsStore.create(results, {"name": "quick"})
    meta = json.loads((results / "store.json").read_text())
    meta["schema"]["version"] = 7
    (results / "store.json").write_text(json.dumps(meta))
    assert main(["run", str(QUICK), "-o", str(results), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"cvmfs-modelio: {results}: results store schema version 7; this cvmfs-modelio reads "
        f"version 2 (use the version that wrote it, or a new -o)\n"
    )
    del store
    monkeypatch.setenv("CVMFS_MODELIO_FUSE_DEVICE", str(tmp_path / "no-fuse"))
    assert main(["run", str(QUICK), "-o", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err == (
        f"cvmfs-modelio: cannot mount the emulated CVMFS: {tmp_path / 'no-fuse'} does not exist "
        f"(no FUSE in this kernel or container)\n"
    )
    assert not (tmp_path / "new").exists()
    assert os.listdir(tmp_path) == ["r"]


def test_a_model_ort_cannot_load_is_recorded_as_failed_not_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.unknown")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.unknown", 1)],
    )
    onnx.save_model(model, tmp_path / "bad.onnx")
    camp = tmp_path / "bad.toml"
    camp.write_text(
        '[campaign]\nname = "bad"\nreps = 1\n[[models]]\npath = "bad.onnx"\n'
        '[target]\nkind = "local"\n[matrix]\ncache = ["cold", "hot"]\n'
    )
    assert main(["run", str(camp), "-o", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "2 measured now (2 failed), 0 missing" in out
    df = ResultsStore.open(tmp_path / "r").measurements()
    assert not df["ok"].any()
    cold = df[df["cache_state"] == "cold"].iloc[0]
    assert cold["error"].startswith(f"loader ort: {tmp_path / 'bad.onnx'}: ")
    assert cold["time_to_first_inference_ns"] == -1 and not cold["cold_verified"]
    assert df[df["cache_state"] == "hot"].iloc[0]["error"].startswith("priming load failed: ")
    # a failure counts as done; --retry-failed measures it again
    assert main(["run", str(camp), "-o", str(tmp_path / "r"), "--resume"]) == 0
    assert "2 were in the store, 0 measured now" in capsys.readouterr().out
    assert main(["run", str(camp), "-o", str(tmp_path / "r"), "--resume", "--retry-failed"]) == 0
    assert "0 were in the store, 2 measured now (2 failed)" in capsys.readouterr().out
    assert len(ResultsStore.open(tmp_path / "r").measurements(dedupe=False)) == 4


def test_dry_run_counts_without_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(QUICK), "-o", str(tmp_path / "r"), "--dry-run"]) == 0
    assert capsys.readouterr().out == (
        f"campaign quick: 3 cells x 2 repetitions = 6 measurements; 0 in {tmp_path / 'r'}, "
        f"6 to measure\n"
    )
    assert not (tmp_path / "r").exists()
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_bytes(b"\x00garbage")
    camp = tmp_path / "c.toml"
    camp.write_text(
        '[campaign]\nname = "c"\n[[models]]\npath = "x.onnx"\n[target]\nkind = "local"\n'
    )
    assert main(["run", str(camp), "-o", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (
        f"cvmfs-modelio: {not_onnx}: not a readable ONNX model (field number 0 at byte 1)\n"
    )
    assert not (tmp_path / "r").exists()


def test_batch_tasks_give_the_same_cells_once_each_after_merging(tmp_path: Path) -> None:
    """The executor interface's batch path: cells split over task files, each task run as
    a worker would (its own process, scratch and mounts), merged atomically."""
    from cvmfs_modelio.campaign.cells import expand, pending
    from cvmfs_modelio.campaign.spec import load_campaign
    from cvmfs_modelio.campaign.task import write_task_file

    spec = load_campaign(QUICK)
    store = ResultsStore.create(tmp_path / "r", spec.canonical())
    cells = expand(spec)
    work = pending(cells, spec.reps, [])
    # split by repetition so that both tasks share cells: rep 0 in task a, rep 1 in task b
    from cvmfs_modelio.campaign.cells import CellWork

    shares = {
        "a": [CellWork(w.cell, (0,)) for w in work],
        "b": [CellWork(w.cell, (1,)) for w in work],
    }
    for tid, share in shares.items():
        write_task_file(tmp_path / f"{tid}.json", share)
        argv = [sys.executable, "-m", "cvmfs_modelio.campaign.task", str(QUICK), str(store.root)]
        r = subprocess.run(
            [*argv, tid, str(tmp_path / f"{tid}.json"), "test"], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"measured": 3, "failed": 0}
    assert store.measured() == []  # nothing reaches the store before the merge
    with store.lock({"pid": os.getpid()}):
        assert store.merge_tasks() == (6, 0)
    df = store.measurements(dedupe=False)
    assert sorted(zip(df["cell_key"], df["rep"], strict=True)) == sorted(
        (c.key, r) for c in cells for r in range(spec.reps)
    )
    assert set(df["executor"]) == {"test"} and set(df["task_id"]) == {"a", "b"}
    assert not df["primed"].any()  # each task's series starts with its cold repetition
    assert df[df["cache_state"] == "cold"]["cold_verified"].all()
    assert set(store.fetches()["measurement_id"]) == set(
        df[df["cache_state"] == "cold"]["measurement_id"]
    )
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    r = subprocess.run([*argv, "c", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == f"cvmfs-modelio task: {bad}: not a task file (AttributeError)\n"


def test_plugged_in_loaders_and_corpus_kinds_run_in_a_campaign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ort.loaders.campaign_loaders()`` and ``models.corpus.campaign_model_kinds()`` plug
    in without an edit of the runner: a corpus safetensors model read by the safetensors
    loaders from local disk, every tensor byte in memory."""
    import struct

    from cvmfs_modelio.campaign.loaders import loader_names
    from cvmfs_modelio.campaign.modelsrc import model_kind_names

    assert {"safetensors-lazy", "safetensors-eager", "streamer"} <= set(loader_names())
    assert {"mlp-safetensors", "minilm-onnx", "decoder-onnx-ext"} <= set(model_kind_names())
    camp = tmp_path / "st.toml"
    camp.write_text(
        '[campaign]\nname = "st"\nreps = 1\n'
        '[[models]]\nkind = "mlp-safetensors"\nsize = "2MiB"\n'
        '[target]\nkind = "local"\n'
        '[matrix]\ncache = ["cold", "hot"]\n'
        'loader = ["safetensors-lazy", "safetensors-eager", "streamer"]\n'
    )
    assert main(["run", str(camp), "-o", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    df = ResultsStore.open(tmp_path / "r").measurements()
    assert len(df) == 6 and df["ok"].all(), df["error"].tolist()
    assert set(df["model"]) == {"mlp-safetensors-2MiB"} and set(df["model_family"]) == {"mlp"}
    assert set(df["model_format"]) == {"safetensors"}
    assert (df["session_ns"] == 0).all() and (df["time_to_first_inference_ns"] > 0).all()
    # every tensor byte was loaded: the data region of the file (after the JSON header)
    from cvmfs_modelio.campaign.modelsrc import materialize
    from cvmfs_modelio.campaign.spec import ModelSpec

    inst = materialize(
        ModelSpec("x", "mlp-safetensors", None, {"size": 2 << 20, "seed": 0}), tmp_path / "m"
    )
    raw = inst.entry.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = sum(
        v["data_offsets"][1] - v["data_offsets"][0]
        for k, v in header.items()
        if k != "__metadata__"
    )
    assert set(df["bytes_requested"]) == {data}
    assert df.loc[df["cache_state"] == "cold", "cold_verified"].all()
