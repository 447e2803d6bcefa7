"""``cvmfs-modelio report RESULTS -o DIR``: Markdown, one self-contained HTML page, best practices.

Fits the results store once and writes ``DIR/report.html`` (figures inlined), ``DIR/report.md``
with ``DIR/figures/*.png``, and ``DIR/best-practices.md`` (``cvmfs_modelio.report.render``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError

TIMING_VECTORS = Path("testvectors") / "cvmfs-timing" / "cold-real-vs-emulated.json"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    from cvmfs_modelio.stats import OBJECTIVES

    p = sub.add_parser(
        "report",
        help="HTML + Markdown report and best-practices.md from a results store",
        description="Markdown, one self-contained HTML page and best-practices.md from a "
        "results store",
    )
    p.add_argument("results", metavar="RESULTS", help="results store directory")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="report directory")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="cold-start",
        help="objective of the recommendation shown",
    )
    p.add_argument(
        "--rtt",
        "--rtt-ms",
        dest="rtt_ms",
        type=T.number(float, 0, 10_000),
        default=10.0,
        metavar="MS",
        help="scenario round-trip time, milliseconds",
    )
    p.add_argument(
        "--bandwidth",
        type=T.bandwidth(),
        default="100MiB",
        metavar="RATE",
        help=f"scenario bandwidth ({units.BANDWIDTH_HELP})",
    )
    p.add_argument(
        "--client-profile",
        default=None,
        help="client profile (default: cvmfs-2.12 if measured, else the only one)",
    )
    p.add_argument(
        "--boot",
        type=T.number(int, 0, 10_000),
        default=200,
        metavar="N",
        help="bootstrap refits for the intervals",
    )
    p.add_argument(
        "--validation-store",
        default=None,
        help="a store written by recommend --validate --validate-store: its cells "
        "are compared with the fit's predictions (no new measurement)",
    )
    p.add_argument(
        "--real-client",
        default=None,
        metavar="JSON",
        help=f"real-vs-emulated cold-load record (default: ../shared/{TIMING_VECTORS} if present)",
    )
    p.add_argument(
        "--herd",
        nargs="+",
        default=None,
        metavar="JSON",
        help="herd results (herd --json, bench/results/herd.json): adds the Site section",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cvmfs_modelio.report.render import ReportInputs, write_report
    from cvmfs_modelio.stats.fit import fit_store
    from cvmfs_modelio.stats.realclient import fit_real_client
    from cvmfs_modelio.stats.recommend import Scenario, recommend
    from cvmfs_modelio.stats.results import load_results

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a directory")
    if not out.parent.resolve().is_dir():
        raise UsageError(f"-o {out}: directory {out.parent} does not exist")
    if not 0 <= args.rtt_ms <= 10_000:
        raise UsageError(f"--rtt: {args.rtt_ms} ms is not in [0, 10000]")
    if not 0 <= args.boot <= 10_000:
        raise UsageError(f"--boot: {args.boot} is not in [0, 10000]")
    bw = args.bandwidth
    herd = None
    if args.herd:
        from cvmfs_modelio.report.site import load_herd

        herd = load_herd(args.herd)  # bad files refused before the fit
    res = load_results(args.results)
    say = _progress()
    say("fitting")
    fit = fit_store(res, args.client_profile, n_boot=args.boot)
    say("recommending")
    rec = recommend(fit, args.objective, Scenario(round(args.rtt_ms * 1e6), bw))
    validation = None
    if args.validation_store:
        validation = _validation_from_store(fit, args.validation_store)
    rc_path = Path(args.real_client) if args.real_client else Path("..") / "shared" / TIMING_VECTORS
    real = fit_real_client(rc_path) if (args.real_client or rc_path.is_file()) else None
    paths = write_report(ReportInputs(res, fit, rec, validation, real, herd), out, say)
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0


def _validation_from_store(fit: Any, store: str) -> Any:
    import numpy as np

    from cvmfs_modelio.stats.fit import _clean_cold, _predict_cells, _warm_by_cell, build_profiles
    from cvmfs_modelio.stats.results import load_results
    from cvmfs_modelio.stats.validate import Validation

    res = load_results(store)
    m = res.measurements[res.measurements["client_profile"] == fit.client_profile]
    cells = _predict_cells(
        m[_clean_cold(m)], build_profiles(res, m), fit.estimate, _warm_by_cell(m)
    )
    if cells.empty:
        raise UsageError(f"--validation-store {store}: no clean cold loads of {fit.client_profile}")
    cells["rel_err"] = (cells["predicted_ns"] - cells["measured_ns"]) / cells["measured_ns"]
    err = np.abs(cells["rel_err"].to_numpy())
    w = cells.iloc[int(np.argmax(err))]
    return Validation(
        cells=cells,
        median_abs_rel_err=float(np.median(err)),
        worst_abs_rel_err=float(err.max()),
        worst_cell={
            "model": str(w["model"]),
            "config": str(w["config"]),
            "rtt_ns": int(w["rtt_ns"]),
            "measured_ns": float(w["measured_ns"]),
            "predicted_ns": float(w["predicted_ns"]),
        },
        rtts_ns=sorted(int(r) for r in cells["rtt_ns"].unique()),
        models=sorted(str(x) for x in cells["model"].unique()),
        store=store,
        client_profile=fit.client_profile,
    )


def _progress() -> Any:
    import sys
    import time

    t0 = time.monotonic()

    def say(msg: str) -> None:
        sys.stderr.write(f"[report {time.monotonic() - t0:5.1f}s] {msg}\n")

    return say
