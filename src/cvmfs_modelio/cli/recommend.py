"""``cvmfs-modelio recommend RESULTS``: chunk sizes for server.conf, from a fitted cost model.

Fits the per-fetch cost model to the results store once (``cvmfs_modelio.stats.fit``), then
scores every candidate configuration per model family (``cvmfs_modelio.stats.recommend``) and,
with ``--validate``, measures the recommendation on models and RTTs the fit never saw
(``cvmfs_modelio.stats.validate``).
"""

from __future__ import annotations

import argparse
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json

DEFAULT_RTT_MS = 10.0
DEFAULT_BANDWIDTH = "100MiB"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    from cvmfs_modelio.stats import DEFAULT_BOOT, OBJECTIVES

    p = sub.add_parser(
        "recommend",
        help="chunk sizes (server.conf lines) from a results store, per model family",
        description="chunk sizes for server.conf, from a cost model fitted to a results store",
    )
    p.add_argument("results", metavar="RESULTS", help="results store directory")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="cold-start",
        help="what to minimise",
    )
    p.add_argument(
        "--rtt",
        "--rtt-ms",
        dest="rtt_ms",
        type=T.number(float, 0, 10_000),
        default=DEFAULT_RTT_MS,
        metavar="MS",
        help="round-trip time to the stratum, milliseconds",
    )
    p.add_argument(
        "--bandwidth",
        type=T.bandwidth(),
        default=DEFAULT_BANDWIDTH,
        metavar="RATE",
        help=f"link bandwidth ({units.BANDWIDTH_HELP})",
    )
    p.add_argument(
        "--prefetch",
        type=T.number(int, 0, 1024),
        default=0,
        metavar="N",
        help="client prefetch depth, chunks (0: none, as cvmfs2)",
    )
    p.add_argument(
        "--client-profile",
        default=None,
        help="client profile to fit (default: cvmfs-2.12 if measured, else the only one)",
    )
    p.add_argument(
        "--family", action="append", default=None, help="only this model family (repeatable)"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="for --objective weighted: NAME=WEIGHT,... (default cold-start=1,bytes=0.25,"
        "storage=0.25,update=0.25)",
    )
    p.add_argument(
        "--boot",
        type=T.number(int, 0, 10_000),
        default=DEFAULT_BOOT,
        metavar="N",
        help="bootstrap refits for the intervals",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="measure the recommendation on models and RTTs not used in the fit",
    )
    p.add_argument(
        "--validate-model",
        action="append",
        default=None,
        metavar="PATH[:FAMILY]",
        help="model to validate on (repeatable; default: two synthetic models of new sizes)",
    )
    p.add_argument(
        "--validate-rtt",
        default="10,40",
        help="RTTs to validate at, milliseconds, comma-separated, not used in the fit",
    )
    p.add_argument(
        "--validate-reps",
        type=T.number(int, 1),
        default=3,
        metavar="N",
        help="repetitions per validation cell",
    )
    p.add_argument(
        "--validate-store", default=None, help="keep the validation measurements in this store"
    )
    p.add_argument("--json", dest="json_out", default=None, help="write everything to this file")
    p.set_defaults(func=run)


def _weights(text: str | None) -> dict[str, float] | None:
    from cvmfs_modelio.stats import OBJECTIVES

    if text is None:
        return None
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or k.strip() not in OBJECTIVES[:-1]:
            raise UsageError(
                f"--weights: {part!r} is not NAME=WEIGHT with NAME one of "
                f"{', '.join(OBJECTIVES[:-1])}"
            )
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise UsageError(f"--weights: {v!r} is not a number") from None
        if not out[k.strip()] >= 0:
            raise UsageError(f"--weights: {part!r} must not be negative")
    if sum(out.values()) <= 0:
        raise UsageError("--weights: all weights are zero")
    return out


def _validation_models(specs: list[str] | None, fit: Any) -> list[Any] | None:
    from cvmfs_modelio.stats.validate import ValidationModel

    if not specs:
        return None
    out = []
    for s in specs:
        path, sep, fam = s.rpartition(":")
        if not sep or "/" in fam:
            path, fam = s, ""
        if not fam:
            import os

            size = os.stat(path).st_size if os.path.exists(path) else 0
            near = min(fit.profiles.values(), key=lambda p: abs(p.model_bytes - size))
            fam = near.family
        out.append(ValidationModel(path, fam))
    return out


def run(args: argparse.Namespace) -> int:
    from cvmfs_modelio.stats.fit import fit_store
    from cvmfs_modelio.stats.recommend import Scenario, recommend
    from cvmfs_modelio.stats.results import load_results
    from cvmfs_modelio.stats.textout import format_recommendation, format_validation

    check_dest(args.json_out)
    if not 0 <= args.rtt_ms <= 10_000:
        raise UsageError(f"--rtt: {args.rtt_ms} ms is not in [0, 10000]")
    bandwidth = args.bandwidth
    if not 0 <= args.prefetch <= 1024:
        raise UsageError(f"--prefetch: {args.prefetch} is not in [0, 1024]")
    if not 0 <= args.boot <= 10_000:
        raise UsageError(f"--boot: {args.boot} is not in [0, 10000]")
    if args.weights is not None and args.objective != "weighted":
        raise UsageError("--weights: only with --objective weighted")
    weights = _weights(args.weights)
    rtts = _rtts(args.validate_rtt) if args.validate else []
    res = load_results(args.results)
    fit = fit_store(res, args.client_profile, n_boot=args.boot)
    sc = Scenario(round(args.rtt_ms * 1e6), bandwidth, args.prefetch)
    rec = recommend(fit, args.objective, sc, weights=weights, families=args.family)
    print(format_recommendation(fit, rec))
    validation = None
    if args.validate:
        from cvmfs_modelio.campaign.experiments import stderr_progress
        from cvmfs_modelio.stats.validate import validate

        validation = validate(
            fit,
            rec,
            _validation_models(args.validate_model, fit),
            rtts,
            reps=args.validate_reps,
            store=args.validate_store,
            progress=stderr_progress(),
        )
        print()
        print(format_validation(validation))
    if args.json_out is not None:
        payload: dict[str, Any] = {
            "fit": fit.to_dict(),
            "recommendation": rec.to_dict(),
            "validation": validation.to_dict() if validation else None,
        }
        write_json(args.json_out, payload, schema="recommend")
    return 0


def _rtts(text: str) -> list[float]:
    out = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            raise UsageError(f"--validate-rtt: {part!r} is not a number of ms") from None
        if not 0 <= v <= 10_000:
            raise UsageError(f"--validate-rtt: {v} ms is not in [0, 10000]")
        out.append(v)
    return out
