"""recommend and report on a synthetic store of known cost; the page opened in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cvmfs_modelio.cli import main
from cvmfs_modelio.stats.costmodel import CostParams
from cvmfs_modelio.stats.synthetic import SynthModel, make_store
from tests.conftest import require_tool

MiB = 1 << 20
CONFIGS = [(False, 0, 0, 0), (True, 1 * MiB, 2 * MiB, 4 * MiB), (True, 4 * MiB, 8 * MiB, 16 * MiB)]
NETS = [(2_000_000, 0), (2_000_000, 100 * MiB), (30_000_000, 0), (30_000_000, 100 * MiB)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = [
        SynthModel("big-a", 20 * MiB, "mlp"),
        SynthModel("big-b", 12 * MiB, "mlp"),
        SynthModel("tagger", 3 * MiB, "hep-tagger"),
        SynthModel("tagger2", 2 * MiB, "hep-tagger"),
    ]
    truth = CostParams(2e6, 1.0, 1.0, 3.0)
    return make_store(tmp_path_factory.mktemp("r") / "store", truth, models, CONFIGS, NETS, reps=2)


def test_recommend_prints_server_conf_and_json(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "rec.json"
    assert (
        main(["recommend", str(store), "--rtt", "20", "--boot", "20", "--json", str(out_json)]) == 0
    )
    text = capsys.readouterr().out
    assert "client profile: cvmfs-2.12" in text
    # full sequential reads: fewer objects win, so the big models are published unchunked
    assert "== family mlp: big-a, big-b" in text
    assert "  CVMFS_USE_FILE_CHUNKING=false" in text
    # the taggers are below the default minimum: no number, the statement
    assert "# chunking cannot matter for these files" in text
    assert "chunking cannot matter for this file" in text
    doc = json.loads(out_json.read_text())
    assert doc["schema"] == {"name": "cvmfs-modelio.recommend", "version": 1}
    fams = {f["family"]: f for f in doc["recommendation"]["families"]}
    assert fams["mlp"]["best"]["chunking"] is False
    assert fams["mlp"]["gain_over_default"] > 0
    assert fams["hep-tagger"]["kind"] == "chunking-irrelevant"
    assert fams["mlp"]["prefetch"][0]["depth"] == 0
    assert doc["fit"]["params"]["rtt_factor"]["value"] == pytest.approx(1.0, rel=0.05)


def test_recommend_bad_input(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", str(tmp_path / "nope")]) == 2
    assert (
        capsys.readouterr().err
        == f"cvmfs-modelio: {tmp_path / 'nope'}: no such results directory\n"
    )
    assert main(["recommend", str(store), "--weights", "cold-start=1"]) == 2
    assert "--weights: only with --objective weighted" in capsys.readouterr().err
    assert main(["recommend", str(store), "--objective", "weighted", "--weights", "speed=1"]) == 2
    assert "--weights: 'speed=1' is not NAME=WEIGHT" in capsys.readouterr().err
    assert main(["recommend", str(store), "--objective", "update", "--boot", "0"]) == 2
    assert "--objective update: no model version series" in capsys.readouterr().err
    assert main(["recommend", str(store), "--family", "llm", "--boot", "0"]) == 2
    assert "--family llm: not in the fit (hep-tagger, mlp)" in capsys.readouterr().err


def test_recommend_other_objectives(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recommend", str(store), "--objective", "storage", "--boot", "0"]) == 0
    assert "objective storage" in capsys.readouterr().out
    assert (
        main(
            [
                "recommend",
                str(store),
                "--objective",
                "weighted",
                "--boot",
                "0",
                "--weights",
                "cold-start=1,bytes=1",
            ]
        )
        == 0
    )
    assert "objective weighted" in capsys.readouterr().out


def test_report_renders_in_chromium(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_tool("chromium", "chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out = tmp_path / "report"
    assert main(["report", str(store), "-o", str(out), "--boot", "20"]) == 0
    printed = capsys.readouterr().out
    assert f"html: {out / 'report.html'}" in printed
    page = (out / "report.html").read_text()
    # one self-contained page: every image inline, nothing fetched from elsewhere
    assert page.count('src="data:image/png;base64,') >= 8
    assert "http://" not in page and "https://" not in page
    md = (out / "report.md").read_text()
    for name in ("sweep", "predicted", "prefetch", "latency", "bytes", "heatmap-big-a"):
        assert f"(figures/{name}.png)" in md
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    bp = (out / "best-practices.md").read_text()
    assert "## Chunk sizes by model size" in bp
    assert "`CVMFS_USE_FILE_CHUNKING=false`" in bp
    assert "[figure](figures/sweep.png)" in bp
    assert "client-side chunk prefetch" in bp
    assert "client profile **cvmfs-2.12**" in bp

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,2400"):
        opts.add_argument(a)
    # The profile and chromium's own scratch dirs go under tmp_path, not /tmp (no leftovers).
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    opts.binary_location = shutil.which("chromium") or ""
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(shutil.which("chromedriver"), env={**os.environ, "TMPDIR": str(tmp_path)})
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        driver.get((out / "report.html").as_uri())
        sizes = driver.execute_script(
            "return Array.from(document.images)"
            ".map(i => [i.complete, i.naturalWidth, i.naturalHeight]);"
        )
        assert len(sizes) >= 8
        assert all(c and w > 0 and h > 0 for c, w, h in sizes), sizes
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
        assert driver.title.startswith("cvmfs-modelio report: store (cvmfs-2.12 client)")
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
