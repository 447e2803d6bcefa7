"""``cvmfs-bench``: exported scripts run against a real emulated mount and exit 0, and
``cvmfs-bench run`` writes the CVMFS client benchmark's CSV shape."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cvmfs_modelio.campaign.cvmfs_bench import CACHE_COLUMNS, MANIFEST, TIME_METRICS
from cvmfs_modelio.cli import main
from cvmfs_modelio.models.synthetic import make_model
from cvmfs_modelio.sim.mount import MountOptions, SimMount
from cvmfs_modelio.sim.publish import PublishParams, publish
from cvmfs_modelio.sim.server import serve
from tests.conftest import CMS_MODELS

MiB = 1 << 20
REPO = "bench.example.org"
CMS = CMS_MODELS / "HLT" / "ParticleNetAK4" / "V01" / "particle-net.onnx"


@pytest.fixture(scope="module")
def mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository with a real CMS model and a chunked synthetic one, mounted (emulated)."""
    d = tmp_path_factory.mktemp("bench")
    src = d / "src"
    (src / "models" / "cms").mkdir(parents=True)
    shutil.copyfile(CMS, src / "models" / "cms" / "particle-net.onnx")
    make_model(src / "models" / "ext" / "external.onnx", 4 * MiB, external_data=True, width=512)
    publish(src, d / "store", PublishParams(MiB, 2 * MiB, 4 * MiB, repository=REPO))
    (d / "mnt").mkdir()
    with (
        serve(d / "store") as srv,
        SimMount(srv.url, d / "mnt", MountOptions(cache=d / "cache", rtt_ms=1.0)) as sm,
    ):
        yield sm.path


def exported(tmp_path: Path, *models: str, loader: str = "ort") -> Path:
    out = tmp_path / "export"
    argv = ["cvmfs-bench", "export", str(out), "--repo", REPO, *models, "--loader", loader]
    assert main(argv) == 0
    return out


def test_export_writes_what_the_benchmark_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = exported(
        tmp_path, f"/cvmfs/{REPO}/models/cms/particle-net.onnx", "models/ext/external.onnx"
    )
    capsys.readouterr()
    scripts = sorted(p.name for p in (out / "scripts").iterdir())
    assert scripts == ["90-model-particle-net.sh", "91-model-external.sh"]
    for s in scripts:
        p = out / "scripts" / s
        assert os.access(p, os.X_OK)
        assert subprocess.run(["bash", "-n", str(p)], check=False).returncode == 0
    cmds = yaml.safe_load((out / "avail_cmds.yaml").read_text())
    assert cmds == {
        "avail_cmds": {
            "model-particle-net": {
                "command": "./scripts/90-model-particle-net.sh",
                "repos": [REPO],
            },
            "model-external": {"command": "./scripts/91-model-external.sh", "repos": [REPO]},
        }
    }
    conf = yaml.safe_load((out / "config_benchmark.yaml").read_text())
    assert conf["avail_cmds"] == cmds["avail_cmds"]
    run = conf["run-models"]
    # the keys start_benchmark.py requires (MAND) of a cvmfs run
    assert run["commands"] == ["model-particle-net", "model-external"]
    assert run["cvmfs_build_dirs"] == ["rpm"] and run["client_configs"] == [["default"]]
    assert run["num_threads"] == [1, 16] and run["repetitions"] == 5
    assert "default" in conf["avail_client_configs"]
    # command names never contain "_": the benchmark splits its CSV names at "_"
    assert all("_" not in n for n in cmds["avail_cmds"])
    assert json.loads((out / MANIFEST).read_text())["commands"][0]["model"] == (
        "models/cms/particle-net.onnx"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--repo", REPO, "/cvmfs/other.org/m.onnx"],
            "/cvmfs/other.org/m.onnx: not in repository bench.example.org "
            "(expected /cvmfs/bench.example.org/...)",
        ),
        (["--repo", REPO, "../m.onnx"], "../m.onnx: not a file path inside the repository"),
        (["--repo", "a/b", "m.onnx"], "--repo: 'a/b' is not a repository name (e.g. cms.cern.ch)"),
    ],
)
def test_export_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["cvmfs-bench", "export", str(tmp_path / "e"), *argv]) == 2
    assert capsys.readouterr().err == f"cvmfs-modelio: {message}\n"
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("loader", ["ort", "ort-noprepack"])
def test_exported_scripts_run_against_an_emulated_mount_and_exit_0(
    tmp_path: Path, mount: Path, loader: str
) -> None:
    out = exported(
        tmp_path, "models/cms/particle-net.onnx", "models/ext/external.onnx", loader=loader
    )
    env = {**os.environ, "CVMFS_BENCH_REPO_ROOT": str(mount)}
    for s in sorted((out / "scripts").iterdir()):
        # as the benchmark calls them: from the export directory, with a thread id
        r = subprocess.run(
            [f"./scripts/{s.name}", "3"], cwd=out, env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout.splitlines()[-1])
        assert doc["session_ns"] > 0 and doc["first_inference_ns"] > 0
        assert doc["prepacking"] is (loader == "ort")
    # a missing model is an error exit, never a silent 0
    r = subprocess.run(
        ["./scripts/90-model-particle-net.sh"],
        cwd=out,
        env={**env, "CVMFS_BENCH_REPO_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert (
        r.stderr == f"model-particle-net: {tmp_path}/models/cms/particle-net.onnx: no such file\n"
    )


def test_run_writes_the_benchmark_csv_shape(
    tmp_path: Path, mount: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = exported(tmp_path, "models/ext/external.onnx")
    argv = ["cvmfs-bench", "run", str(out), "--mount", str(mount), "--reps", "2", "--threads", "2"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    (csv,) = sorted((out / "data").iterdir())
    assert csv.name == "model-external_cmio-simfs-0.1.0_default_2_0.csv"
    assert str(csv) in stdout
    assert csv.read_text().splitlines()[0] == (
        "labels,cold_cache,warm_cache,hot_cache,command_label,cvmfs_version,num_threads"
    )
    # read exactly as the benchmark's visualisation does
    df = pd.read_csv(csv, index_col="labels", sep=",")
    assert list(df.index[: len(TIME_METRICS)]) == list(TIME_METRICS)
    counters = [i for i in df.index if i.startswith(f"{REPO}_")]
    assert len(df.index) == len(TIME_METRICS) + len(counters)
    for name in ("fetch.n_downloads", "download.sz_transferred_bytes", "cvmfs.n_fs_open"):
        assert f"{REPO}_{name}" in counters
    values = {c: {i: ast.literal_eval(df.loc[i][c]) for i in df.index} for c in CACHE_COLUMNS}
    for c in CACHE_COLUMNS:
        for m in TIME_METRICS:
            assert len(values[c][m]) == 4  # 2 repetitions x 2 threads
        assert all(v > 0 for v in values[c]["real"])
        for k in counters:
            assert len(values[c][k]) == 2  # read once per repetition
    assert set(df["command_label"]) == {"model-external"} and set(df["num_threads"]) == {2}
    # counters accumulate; each cold repetition fetches the 5 objects of the model again
    # (two parallel copies share the downloads), warm and hot fetch nothing
    dl = [*values["cold_cache"][f"{REPO}_fetch.n_downloads"]]
    warm = values["warm_cache"][f"{REPO}_fetch.n_downloads"]
    hot = values["hot_cache"][f"{REPO}_fetch.n_downloads"]
    assert dl[1] - dl[0] == 5
    assert warm == [dl[1], dl[1]] and hot == [dl[1], dl[1]]
    # a second run numbers its file on
    assert main([*argv[:-4], "--reps", "1", "--threads", "2"]) == 0
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "model-external_cmio-simfs-0.1.0_default_2_0.csv",
        "model-external_cmio-simfs-0.1.0_default_2_1.csv",
    ]


def test_run_refuses_bad_input(
    tmp_path: Path, mount: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cvmfs-bench", "run", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"cvmfs-modelio: {tmp_path}: not a cvmfs-bench export (no {MANIFEST})\n"
    )
    out = exported(tmp_path, "models/ext/external.onnx")
    assert main(["cvmfs-bench", "run", str(out), "--mount", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"cvmfs-modelio: {tmp_path}: not on a CVMFS mount\n"
    assert main(["cvmfs-bench", "run", str(out), "--mount", str(mount), "--commands", "x"]) == 2
    assert "--commands: 'x' is not in" in capsys.readouterr().err
    assert not (out / "data").exists()


def test_campaign_on_a_repository_path_reads_its_actual_layout(
    tmp_path: Path, mount: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ``cvmfs`` target (a repository as it is) through an emulated mount: the same
    code path as on /cvmfs, layouts and counters through ``cvmfs_modelio.mounts``."""
    from cvmfs_modelio.campaign.store import ResultsStore

    camp = tmp_path / "repo.toml"
    camp.write_text(
        f'[campaign]\nname = "repo"\nreps = 2\n[[models]]\npath = "models/ext/external.onnx"\n'
        f'[target]\nkind = "cvmfs"\npath = "{mount}"\n'
    )
    assert main(["run", str(camp), "-o", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    df = ResultsStore.open(tmp_path / "r").measurements()
    assert len(df) == 6 and df["ok"].all()
    assert set(df["target"]) == {"cvmfs"} and set(df["chunk_label"]) == {"repository"}
    assert set(df["client_profile"]) == {"cvmfs-2.12"}
    # the repository's own layout: the .onnx whole, the data in its 4 published chunks
    assert (df["chunks_total"] == 5).all() and (df["objects_total"] == 5).all()
    cold = df[df["cache_state"] == "cold"]
    assert cold["cold_verified"].all() and (cold["objects_fetched"] == 5).all()
    assert (cold["cached_objects_before"] == -1).all()  # a real cache is not listed
    hot = df[df["cache_state"] == "hot"]
    assert hot["state_verified"].all() and (hot["objects_fetched"] == 0).all()
    bad = tmp_path / "bad.toml"
    bad.write_text(
        camp.read_text()
        .replace(str(mount), str(tmp_path))
        .replace("models/ext/external.onnx", "repo.toml")
    )
    assert main(["run", str(bad), "-o", str(tmp_path / "r2")]) == 2
    assert capsys.readouterr().err == (
        f"cvmfs-modelio: {bad}: [target]: path {tmp_path} is not on a CVMFS mount\n"
    )
