"""ONNX Runtime loads from emulated CVMFS per chunk configuration, beside the local-disk load.

Models: the demo's synthetic ~50 MB model (weights embedded and as external data) and real CMS
models from ``../shared/models/cms`` (those present).  Baseline: the same child process
(``cvmfs_modelio.ort.child``) loading the model from local disk, page cache dropped with fadvise
(cold) or kept (warm).  Then the campaign
(``cvmfs_modelio.campaign.experiments.run_campaign``): each
chunk configuration published, served behind the emulated WAN, mounted, loaded cold and warm.
Medians over ``--reps`` repetitions.

    python bench/bench_campaign.py [--reps 5] [--rtt-ms 10] [--bandwidth 100MiB]
                                   [--json bench/results/campaign.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.experiments import (
    CAMPAIGN_SCHEMA_VERSION,
    CampaignParams,
    ModelFiles,
    campaign_payload,
    format_rows,
    model_from_path,
    run_campaign,
    stderr_progress,
    synthetic_models,
)
from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_ns, parse_bandwidth, parse_size
from cvmfs_modelio.mounts import drop_page_cache

RESULTS = Path(__file__).resolve().parent / "results" / "campaign.json"
CMS = Path(__file__).resolve().parents[2] / "shared" / "models" / "cms"
CMS_MODELS = (
    "HLT/ParticleNetAK4/V01/particle-net.onnx",
    "RobustParTAK4/PUPPI/V00/nominal/RobustParTAK4.onnx",
    "DeepFlavourV04_12X_training/DeepJet_Run3_122X.onnx",
)


def local_load(model: ModelFiles, cold: bool) -> dict[str, int]:
    """One ORT load of ``model`` from local disk in a fresh process; times in ns."""
    if cold:
        drop_page_cache(model.files)
    argv = [sys.executable, "-m", "cvmfs_modelio.ort.child", str(model.onnx)]
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    doc: dict[str, int] = json.loads(r.stdout.splitlines()[-1])
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rtt-ms", type=float, default=10.0)
    ap.add_argument("--bandwidth", default="100MiB")
    ap.add_argument("--size", default="50MiB")
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args()
    params = CampaignParams(
        rtt_ms=args.rtt_ms, bandwidth=parse_bandwidth(args.bandwidth, "--bandwidth"), reps=args.reps
    )
    say = stderr_progress()
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        models = synthetic_models(Path(tmp), parse_size(args.size, "--size"))
        models += [model_from_path(CMS / m) for m in CMS_MODELS if (CMS / m).is_file()]
        baseline: list[dict[str, Any]] = []
        for m in models:
            say(f"local disk: {m.name}")
            runs = {
                c: [local_load(m, c == "cold") for _ in range(args.reps)] for c in ("cold", "warm")
            }
            baseline.append(
                {
                    "model": m.name,
                    **{
                        f"{c}_{k}": round(statistics.median(r[k] for r in runs[c]))
                        for c in runs
                        for k in ("session_ns", "first_inference_ns")
                    },
                    "runs": runs,
                }
            )
        rows = run_campaign(models, params, say)
    print(f"Local disk (baseline), medians of {args.reps}")
    print(
        format_table(
            ["model", "cold session", "cold 1st inf", "warm session", "warm 1st inf"],
            [
                [
                    b["model"],
                    fmt_ns(b["cold_session_ns"]),
                    fmt_ns(b["cold_first_inference_ns"]),
                    fmt_ns(b["warm_session_ns"]),
                    fmt_ns(b["warm_first_inference_ns"]),
                ]
                for b in baseline
            ],
        )
    )
    print()
    print(f"Emulated CVMFS, RTT {params.rtt_ms:g} ms, {args.bandwidth}/s, medians of {args.reps}")
    print(format_rows(rows))
    write_json(
        args.json,
        {"baseline_local": baseline, **campaign_payload(rows, params)},
        schema="bench.campaign",
        version=CAMPAIGN_SCHEMA_VERSION,
        measured=[m.onnx for m in models],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
