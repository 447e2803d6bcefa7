"""``cvmfs-modelio experiment``: ONNX Runtime loads from emulated CVMFS, per chunk configuration.

Publishes the models (real files with ``--models``, else synthetic ones) with each chunk
configuration, serves and mounts them behind an emulated WAN, and times ONNX Runtime
session creation and first inference cold and warm (``cvmfs_modelio.campaign.experiments``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.experiments import (
    CAMPAIGN_CLIENT_PROFILE,
    CAMPAIGN_SCHEMA_VERSION,
    DEFAULT_REPS,
    DEFAULT_RTT_MS,
    CampaignParams,
    CampaignRow,
    campaign_payload,
    format_rows,
    fuse_unavailable_reason,
    model_from_path,
    parse_configs,
    run_campaign,
    stderr_progress,
    synthetic_models,
    unique_names,
)
from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import Interrupted, UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json

DEFAULT_CONFIGS_TEXT = "4MiB/8MiB/16MiB,1MiB/2MiB/4MiB,whole"


def add_campaign_options(p: argparse.ArgumentParser) -> None:
    """The campaign options of ``experiment`` (``demo`` has its own, with --quick defaults)."""
    p.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS_TEXT,
        metavar="SPECS",
        help="chunk configurations, comma-separated: MIN/AVG/MAX (bytes, CVMFS xor32) or whole",
    )
    p.add_argument(
        "--rtt-ms",
        type=T.number(float, 0, 1e6),
        default=DEFAULT_RTT_MS,
        metavar="MS",
        help="emulated round-trip time, milliseconds",
    )
    p.add_argument(
        "--bandwidth",
        type=T.bandwidth(),
        default="100MiB",
        metavar="RATE",
        help=f"emulated bandwidth ({units.BANDWIDTH_HELP})",
    )
    p.add_argument(
        "--reps",
        type=T.number(int, 1),
        default=DEFAULT_REPS,
        metavar="N",
        help="repetitions of every load; tables show medians",
    )
    p.add_argument(
        "--size",
        type=T.size(1),
        default="50MiB",
        metavar="SIZE",
        help="weight bytes of each synthetic model",
    )
    p.add_argument(
        "--client-profile",
        choices=("cvmfs-2.12", "fast"),
        default=CAMPAIGN_CLIENT_PROFILE,
        help="emulated client's per-object cost: cvmfs-2.12 (as the real client) or fast "
        f"(default {CAMPAIGN_CLIENT_PROFILE})",
    )


def incomplete(e: Interrupted) -> dict[str, Any]:
    """The keys that mark a result file written after an interrupt."""
    return {"complete": False, "interrupted_by": e.name}


def campaign_params(args: argparse.Namespace) -> CampaignParams:
    return CampaignParams(
        configs=tuple(parse_configs(args.configs)),
        rtt_ms=args.rtt_ms,
        bandwidth=args.bandwidth,
        reps=args.reps,
        trace=bool(getattr(args, "trace", False)),
        client_profile=args.client_profile,
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "experiment",
        help="ONNX Runtime load times from emulated CVMFS per chunk configuration",
        description="ONNX Runtime loads from emulated CVMFS, per chunk configuration: the "
        "models are published with each configuration, served and mounted behind an emulated "
        "WAN, and loaded cold and warm.",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="PATH",
        help="ONNX model files (external data is published with them); default: synthetic",
    )
    add_campaign_options(p)
    p.add_argument(
        "--trace",
        action="store_true",
        help="run the first cold load under the LD_PRELOAD tracer (chunks ORT read)",
    )
    p.add_argument("--json", dest="json_out", default=None, help="write all rows to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_dest(args.json_out)
    params = campaign_params(args)
    params.validate()
    weight_bytes = args.size
    models = unique_names([model_from_path(m) for m in args.models]) if args.models else None
    reason = fuse_unavailable_reason()
    if reason is not None:
        raise UsageError(f"experiment: cannot mount the emulated CVMFS: {reason}")
    rows: list[CampaignRow] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-models-") as tmp:
            if models is None:
                models = synthetic_models(Path(tmp), weight_bytes)
            run_campaign(models, params, stderr_progress(), out=rows)
    except Interrupted as e:
        # Everything is unmounted, stopped and removed by now: keep what was measured.
        if args.json_out is not None:
            write_json(
                args.json_out,
                {**campaign_payload(rows, params), **incomplete(e)},
                schema="campaign",
                version=CAMPAIGN_SCHEMA_VERSION,
            )
        raise
    print(
        f"ONNX Runtime from emulated CVMFS: RTT {params.rtt_ms:g} ms, "
        f"{units.fmt_rate(params.bandwidth) if params.bandwidth else 'unlimited'}, "
        f"medians of {params.reps}"
    )
    print(format_rows(rows))
    if args.json_out is not None:
        write_json(
            args.json_out,
            {**campaign_payload(rows, params), "complete": True},
            schema="campaign",
            version=CAMPAIGN_SCHEMA_VERSION,
        )
    return 0
