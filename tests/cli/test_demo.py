"""``cvmfs-modelio demo``: the whole campaign (runner, fit, recommend, validate, report) on a
real emulated stack, the corpus it declares, its output directory, and the no-FUSE path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvmfs_modelio.campaign.experiments import FUSE_DEVICE_ENV
from cvmfs_modelio.campaign.store import ResultsStore
from cvmfs_modelio.cli import main
from cvmfs_modelio.cli.demo import FULL, MARKER, corpus
from tests.conftest import SHARED, require_root_fuse, shared_file

MiB = 1 << 20


def test_corpus_is_the_pair_minilm_and_two_cms_models(monkeypatch: pytest.MonkeyPatch) -> None:
    shared_file("models/minilm/model.safetensors")
    monkeypatch.delenv("CVMFS_MODELIO_MINILM", raising=False)
    models, notes = corpus(SHARED, FULL)
    assert notes == []
    assert [(m.name, m.kind, m.family) for m in models] == [
        ("synthetic-embedded", "synthetic", "mlp"),
        ("synthetic-external", "synthetic", "mlp"),
        ("minilm", "minilm-onnx", "transformer"),
        ("particlenet-ak8", "file", "hep-tagger"),
        ("robustpart-ak4", "file", "hep-tagger"),
    ]
    assert models[0].params == {"size": 24 * MiB, "external_data": False, "width": 512, "seed": 0}
    assert (
        models[3].path == (SHARED / "models/cms/HLT/ParticleNetAK8/V02/particle-net.onnx").resolve()
    )
    import os

    assert os.environ["CVMFS_MODELIO_MINILM"] == str((SHARED / "models/minilm").resolve())


def test_corpus_without_shared_is_the_pair_and_says_so(tmp_path: Path) -> None:
    models, notes = corpus(tmp_path / "nowhere", FULL)
    assert [m.name for m in models] == ["synthetic-embedded", "synthetic-external"]
    assert notes == [
        f"{tmp_path / 'nowhere'}: not found, so the corpus is the synthetic pair only "
        "(no MiniLM, no CMS models; --shared DIR names it)"
    ]


def test_quick_demo_ends_with_the_verdict_and_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_root_fuse()
    out = tmp_path / "out"
    doc_path = tmp_path / "demo.json"
    argv = ["demo", "--quick", "--size", "4MiB", "--shared", str(tmp_path / "no-shared")]
    assert main([*argv, "-o", str(out), "--json", str(doc_path)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert "Local disk: probe patterns, page cache cold and warm" in lines
    assert f"{tmp_path / 'no-shared'}: not found, so the corpus is the synthetic pair only" in text
    doc = json.loads(doc_path.read_text())
    assert doc["schema"] == {"name": "cvmfs-modelio.demo", "version": 3}
    assert doc["complete"] is True and len(doc["rows"]) == 18
    # the campaign ran through the runner into a results store: 2 models x 2 configurations
    # x 1 RTT x cold/warm/hot x 1 repetition, every load ok, every cold one verified cold
    m = ResultsStore.open(out / "results").measurements()
    assert len(m) == doc["measured"] == 12 and doc["failed"] == 0
    assert m["ok"].all()
    assert sorted(m["chunk_label"].unique()) == ["1/2/4 MiB", "4/8/16 MiB"]
    assert m.loc[m["cache_state"] == "cold", "cold_verified"].all()
    assert (m.loc[m["cache_state"] != "cold", "objects_fetched"] == 0).all()
    assert set(m["client_profile"]) == {"cvmfs-2.12"} and not m["traced"].any()
    r = ResultsStore.open(out / "results").reads()
    assert set(r["source"]) >= {"fuse-read", "fetch"}
    # fit, recommendation, validation and verdict in the JSON and on stdout
    assert doc["fit"]["client_profile"] == "cvmfs-2.12"
    (fam,) = doc["recommendation"]["families"]
    assert fam["family"] == "mlp"
    (verdict,) = doc["verdict"]
    assert verdict["family"] == "mlp" and verdict["server_conf"] == fam["server_conf"]
    assert [v["model"] for v in verdict["models"]] == ["synthetic-embedded", "synthetic-external"]
    val = doc["validation"]
    configs = 1 if fam["best"]["label"] == "4 MiB/8 MiB/16 MiB" else 2
    assert len(val["cells"]) == 2 * configs and val["rtts_ns"] == [40_000_000]
    start = lines.index(
        "Verdict for RTT 10 ms, 100.0 MiB/s, client profile cvmfs-2.12 "
        f"(fit: {doc['fit']['n_fetches']} fetches, leave-one-model-out median error "
        f"{100 * doc['fit']['cv_median_abs_rel_err']:.1f}%):"
    )
    tail = lines[start + 1 :]
    assert tail[0].startswith("  mlp: ")
    assert tail[1].startswith("    synthetic-embedded: ") and " to first inference (" in tail[1]
    assert [ln for ln in tail if ln.startswith("    server.conf: ")] == [
        f"    server.conf: {ln}" for ln in fam["server_conf"]
    ]
    (vline,) = [ln for ln in tail if ln.startswith("  validation: ")]
    assert f"median |error| {100 * val['median_abs_rel_err']:.1f}%" in vline
    i = tail.index("  prefetch (predicted by the fit; cvmfs2 has none):")
    (finding,) = doc["prefetch_finding"]
    assert tail[i + 1] == f"    {finding}" and finding.startswith("mlp: depth ")
    html = Path(doc["report"]["html"])
    assert f"  report: {html}" in tail and html == (out / "report" / "report.html").resolve()
    assert html.stat().st_size > 10_000 and (out / MARKER).is_file()
    assert lines[-1].startswith("demo took ")
    # a second demo replaces what the first wrote, a foreign directory is refused
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep").write_text("x")
    assert main(["demo", "--quick", "-o", str(foreign)]) == 2
    assert capsys.readouterr().err == (
        f"cvmfs-modelio: -o {foreign}: exists and was not written by cvmfs-modelio demo "
        "(choose another -o)\n"
    )
    assert [p.name for p in foreign.iterdir()] == ["keep"]


def test_without_fuse_demo_says_why_and_still_probes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-fuse"
    monkeypatch.setenv(FUSE_DEVICE_ENV, str(missing))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo.json"
    assert main(["demo", "--size", "4MiB", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Local disk: probe patterns" in text
    reason = f"{missing} does not exist (no FUSE in this kernel or container)"
    assert text.splitlines()[-1] == f"Emulated CVMFS: not run: {reason}"
    doc = json.loads(out.read_text())
    assert doc["cvmfs"] == {"skipped": reason} and len(doc["rows"]) == 18
    assert doc["complete"] is True
    # nothing but the JSON was written: no output directory without a campaign
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json"]
