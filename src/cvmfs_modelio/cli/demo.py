"""``cvmfs-modelio demo``: the whole campaign on built-in defaults, ending with a verdict.

Runs anywhere with FUSE (no ``/cvmfs`` needed):

1. probes the synthetic model pair (weights embedded / external data) on local disk, page
   cache cold and warm (the probe table);
2. declares a campaign (``campaign.spec.CampaignSpec``) over a small corpus: the synthetic
   pair, the real all-MiniLM-L6-v2 assembled into ONNX from ``../shared/models/minilm`` and
   two CMS taggers from ``../shared/models/cms`` (without ``../shared``: the pair only), at a
   few chunk configurations and RTTs, cold/warm/hot ONNX Runtime loads, and runs it with the
   campaign runner (``campaign.execute``) into a results store;
3. fits the cost model (``stats.fit``), recommends per model family (``stats.recommend``),
   validates the recommendation on unseen models at unseen RTTs (``stats.validate``) and
   writes the report (``report.render``);
4. prints the verdict (``stats.verdict``): per family the best configuration, time to first
   inference with its spread and the gain over the defaults (or "within noise"), the
   ``server.conf`` lines, the validation line, the prefetch finding, the report's path.

Without FUSE (not root, no ``/dev/fuse``, no ``fusermount3``) or with ``--no-cvmfs`` only the
probe table is measured, and one line says why.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import Interrupted, UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.probe.engine import ProbeSummary, probe

MiB = 1 << 20
MARKER = ".cvmfs-modelio-demo"  # marks an output directory the demo may replace
CMS_MODELS = (
    ("particlenet-ak8", Path("models/cms/HLT/ParticleNetAK8/V02/particle-net.onnx")),
    ("robustpart-ak4", Path("models/cms/RobustParTAK4/PUPPI/V00/nominal/RobustParTAK4.onnx")),
)
MINILM = Path("models/minilm")
TIMING_VECTORS = Path("testvectors/cvmfs-timing/cold-real-vs-emulated.json")
SCENARIO_RTT_MS = 10.0  # the recommendation's scenario: an RTT the campaign measures


@dataclass(frozen=True)
class Plan:
    """The demo's campaign and what follows it (``--quick`` shrinks every axis)."""

    size: int  # weight bytes of each synthetic model
    configs: str  # chunk configurations measured
    rtts_ms: tuple[float, ...]  # RTTs the fit sees
    reps: int
    validate_rtts_ms: tuple[float, ...]  # RTTs only the validation sees
    validate_reps: int
    boot: int  # bootstrap refits


FULL = Plan(24 * MiB, "4MiB/8MiB/16MiB,1MiB/2MiB/4MiB,whole", (10.0, 30.0), 2, (20.0, 40.0), 2, 100)
QUICK = Plan(8 * MiB, "4MiB/8MiB/16MiB,1MiB/2MiB/4MiB", (10.0,), 1, (40.0,), 1, 20)


# ------------------------------------------------------------------ the probe table


@dataclass(frozen=True)
class Workload:
    """One probe setting of the demo: a pattern and its parameters (bytes)."""

    label: str
    pattern: str
    block: int
    count: int | None = None


WORKLOADS: tuple[Workload, ...] = (
    Workload("seq 1MiB", "seq", 1 << 20),
    Workload("rand 4KiB", "rand", 4096, 2048),
    Workload("mmap-rand 4KiB", "mmap-rand", 4096, 2048),
)


@dataclass(frozen=True)
class DemoRow:
    """One measured line of the probe table."""

    file: str
    file_size: int
    workload: str
    cache: str  # "cold" or "warm"
    summary: ProbeSummary

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "file": self.file,
            "file_size_bytes": self.file_size,
            "workload": self.workload,
            "cache": self.cache,
            "not_cold": self.summary.not_cold,
            "summary": self.summary.to_dict(),
        }


def model_files(workdir: Path, weight_bytes: int) -> list[Path]:
    """Write the synthetic pair into ``workdir``; the files to probe (``.onnx`` and ``.data``)."""
    # onnx is imported here, not at start-up, so every other command starts fast.
    from cvmfs_modelio.models.synthetic import make_model

    embedded = make_model(workdir / "embedded.onnx", weight_bytes)
    external = make_model(workdir / "external.onnx", weight_bytes, external_data=True)
    files = [embedded.onnx, external.onnx]
    if external.data is not None:
        files.append(external.data)
    # The models were just written: flush them so `cold` can evict them (dirty pages stay).
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return files


def run_demo(
    workdir: Path,
    *,
    weight_bytes: int = 24 * MiB,
    workloads: Sequence[Workload] = WORKLOADS,
    out: list[DemoRow] | None = None,
) -> list[DemoRow]:
    """Generate the pair in ``workdir`` and probe each file cold then warm; the rows
    (appended to ``out`` as they are measured, if given)."""
    rows: list[DemoRow] = [] if out is None else out
    for f in model_files(workdir, weight_bytes):
        size = f.stat().st_size
        for w in workloads:
            block = min(w.block, size)
            for cache in ("cold", "warm"):
                res = probe(
                    f,
                    w.pattern,
                    block=block,
                    count=w.count,
                    cold=cache == "cold",
                    faults=w.pattern.startswith("mmap-"),
                )
                rows.append(DemoRow(f.name, size, w.label, cache, res.summary))
    return rows


HEADER = (
    "file",
    "size",
    "workload",
    "cache",
    "ops",
    "MiB/s",
    "IOPS",
    "p50",
    "p99",
    "majflt",
    "pages resident before→after",
)


def format_rows(rows: Sequence[DemoRow]) -> str:
    """The probe table."""
    lines = [HEADER]
    flagged: list[str] = []
    for r in rows:
        s = r.summary
        cache = r.cache
        if s.not_cold is not None:
            cache = "cold!"
            flagged.append(f"{r.file} {r.workload}: {s.not_cold}")
        lines.append(
            (
                r.file,
                units.fmt_bytes(r.file_size),
                r.workload,
                cache,
                str(s.ops),
                f"{s.throughput_bps / 2**20:,.1f}",
                f"{s.iops:,.0f}",
                units.fmt_ns(s.latency_ns.p50),
                units.fmt_ns(s.latency_ns.p99),
                "-" if s.majflt is None else str(s.majflt),
                f"{s.residency_before}→{s.residency_after}/{s.total_pages}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(lines):
        cells = [
            c.ljust(w) if i < 4 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    for f in flagged:
        out.append(f"cold!: NOT a cold number: {f}")
    return "\n".join(out)


# ------------------------------------------------------------------ command line


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole campaign on built-in defaults, ending with a verdict (no /cvmfs needed)",
        description="Probe synthetic models locally, then measure a small corpus on the "
        "emulated CVMFS stack at a few chunk configurations, fit, recommend, validate, "
        "report, and print the verdict.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smaller campaign (2 configurations, 1 RTT, 1 repetition): about a minute",
    )
    p.add_argument(
        "-o",
        "--output",
        default="cvmfs-modelio-demo",
        metavar="DIR",
        help="where the results store and the report go (replaced if an earlier demo wrote "
        "it; any other existing non-empty directory is refused)",
    )
    p.add_argument(
        "--shared",
        default=str(Path("..") / "shared"),
        metavar="DIR",
        help="the project's shared directory with models/minilm and models/cms",
    )
    p.add_argument(
        "--size",
        type=T.size(1),
        default=None,
        metavar="SIZE",
        help="weight bytes of each synthetic model (default: 24MiB, 8MiB with --quick)",
    )
    p.add_argument(
        "--reps",
        type=T.number(int, 1, 100),
        default=None,
        metavar="N",
        help="repetitions of every load (default: 2, 1 with --quick)",
    )
    p.add_argument(
        "--configs",
        default=None,
        metavar="SPECS",
        help="chunk configurations measured, comma-separated MIN/AVG/MAX or whole (default: "
        f"{FULL.configs}; {QUICK.configs} with --quick)",
    )
    p.add_argument(
        "--bandwidth",
        type=T.bandwidth(),
        default="100MiB",
        metavar="RATE",
        help=f"emulated bandwidth ({units.BANDWIDTH_HELP})",
    )
    p.add_argument(
        "--client-profile",
        choices=("cvmfs-2.12", "fast"),
        default="cvmfs-2.12",
        help="emulated client's per-object cost: cvmfs-2.12 (as the real client) or fast",
    )
    p.add_argument("--no-cvmfs", action="store_true", help="only the local probe table")
    p.add_argument(
        "--json",
        dest="json_out",
        default=None,
        metavar="PATH",
        help="write every table, the fit, the recommendation, the validation, the verdict and "
        "the environment here (also after an interrupt: what was done, complete: false)",
    )
    p.set_defaults(func=run)


# 3: the whole campaign: store, fit, recommendation, validation, verdict, report
DEMO_SCHEMA_VERSION = 3


def _output_dir(path: str) -> Path:
    """The output directory, made empty; refuses one the demo did not write."""
    check_dest(path, directory=True)
    out = Path(path)
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UsageError(
                f"-o {path}: exists and was not written by cvmfs-modelio demo (choose another -o)"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by cvmfs-modelio demo; the next demo replaces it\n")
    return out


def run(args: argparse.Namespace) -> int:
    from cvmfs_modelio.cli.experiment import incomplete

    check_dest(args.json_out)
    plan = QUICK if args.quick else FULL
    if args.size is not None:
        plan = _replace(plan, size=args.size)
    if args.reps is not None:
        plan = _replace(plan, reps=args.reps)
    if args.configs is not None:
        from cvmfs_modelio.campaign.experiments import parse_configs

        parse_configs(args.configs)  # a bad spec is one line before any work
        plan = _replace(plan, configs=args.configs)
    t0 = time.monotonic()
    payload: dict[str, Any] = {
        "quick": bool(args.quick),
        "plan": _plan_dict(plan),
        "load_average_start": list(os.getloadavg()),  # judge the wall time by it
    }
    rows: list[DemoRow] = []
    try:
        _run(args, plan, payload, rows)
    except Interrupted as e:
        # Children stopped, mounts gone, temporary directories removed: keep what was done.
        if args.json_out is not None:
            payload["rows"] = [r.to_dict() for r in rows]
            payload["wall_s"] = time.monotonic() - t0
            payload["stored_measurements"] = _stored(payload.get("results"))
            write_json(
                args.json_out,
                {**payload, **incomplete(e)},
                schema="demo",
                version=DEMO_SCHEMA_VERSION,
            )
        raise
    payload["wall_s"] = time.monotonic() - t0
    payload["load_average_end"] = list(os.getloadavg())
    if "results" in payload:
        print(f"\ndemo took {payload['wall_s']:.0f} s (load average {_loadavg()})")
    if args.json_out is not None:
        write_json(
            args.json_out, {**payload, "complete": True}, schema="demo", version=DEMO_SCHEMA_VERSION
        )
    return 0


def _stored(results: str | None) -> int:
    """Measurements committed to the demo's results store (0 if none yet)."""
    from cvmfs_modelio.campaign.store import ResultsStore

    if results is None or not (Path(results) / "store.json").is_file():
        return 0
    try:
        return len(ResultsStore.open(results).measurements())
    except UsageError:
        return 0


def _replace(plan: Plan, **kw: Any) -> Plan:
    from dataclasses import replace

    return replace(plan, **kw)


def _plan_dict(plan: Plan) -> dict[str, Any]:
    return {
        "synthetic_size_bytes": plan.size,
        "configs": plan.configs.split(","),
        "rtt_ms": list(plan.rtts_ms),
        "reps": plan.reps,
        "validate_rtt_ms": list(plan.validate_rtts_ms),
        "validate_reps": plan.validate_reps,
        "bootstrap": plan.boot,
    }


def _loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _say(msg: str) -> None:
    sys.stderr.write(f"[demo] {msg}\n")
    sys.stderr.flush()


def _run(
    args: argparse.Namespace, plan: Plan, payload: dict[str, Any], rows: list[DemoRow]
) -> None:
    from cvmfs_modelio.campaign.experiments import fuse_unavailable_reason

    reason = "--no-cvmfs given" if args.no_cvmfs else fuse_unavailable_reason()
    out = _output_dir(args.output) if reason is None else None
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-demo-") as tmp:
        _say("probing the synthetic models on local disk")
        run_demo(Path(tmp), weight_bytes=plan.size, out=rows)
    print("Local disk: probe patterns, page cache cold and warm")
    print(format_rows(rows))
    sys.stdout.flush()
    payload["rows"] = [r.to_dict() for r in rows]
    if reason is not None or out is None:
        print()
        print(f"Emulated CVMFS: not run: {reason}")
        payload["cvmfs"] = {"skipped": reason}
        return
    _campaign(args, plan, out, payload)


def corpus(shared: Path, plan: Plan) -> tuple[list[Any], list[str]]:
    """The demo's models (``campaign.spec.ModelSpec``) and a note per part left out."""
    from cvmfs_modelio.campaign.spec import ModelSpec

    models = [
        ModelSpec(
            f"synthetic-{form}",
            "synthetic",
            None,
            {"size": plan.size, "external_data": form == "external", "width": 512, "seed": 0},
            "mlp",
        )
        for form in ("embedded", "external")
    ]
    notes: list[str] = []
    if not shared.is_dir():
        notes.append(
            f"{shared}: not found, so the corpus is the synthetic pair only "
            "(no MiniLM, no CMS models; --shared DIR names it)"
        )
        return models, notes
    minilm = shared / MINILM
    if (minilm / "model.safetensors").is_file():
        # the corpus kind finds the MiniLM files here (also when the fit writes it again)
        os.environ["CVMFS_MODELIO_MINILM"] = str(minilm.resolve())
        models.append(ModelSpec("minilm", "minilm-onnx", None, {}, "transformer"))
    else:
        notes.append(f"{minilm}: no model.safetensors, so no MiniLM in the corpus")
    for name, rel in CMS_MODELS:
        p = shared / rel
        if p.is_file():
            models.append(ModelSpec(name, "file", p.resolve(), {}, "hep-tagger"))
        else:
            notes.append(f"{p}: not found, so {name} is not in the corpus")
    return models, notes


def demo_spec(models: Sequence[Any], plan: Plan, bandwidth: int, client_profile: str) -> Any:
    """The demo's campaign (``campaign.spec.CampaignSpec``)."""
    from cvmfs_modelio.campaign.experiments import parse_configs
    from cvmfs_modelio.campaign.spec import CampaignSpec, Matrix, TargetSpec

    return CampaignSpec(
        name="demo",
        description="cvmfs-modelio demo: the corpus at a few chunk configurations and RTTs",
        models=tuple(models),
        target=TargetSpec("emulated"),
        matrix=Matrix(
            chunking=tuple(parse_configs(plan.configs)),
            rtt_ms=plan.rtts_ms,
            bandwidth=(bandwidth,),
            prefetch=(0,),
            parallel=(16,),
            client_profile=(client_profile,),
            cache=("cold", "warm", "hot"),
            loader=("ort",),
        ),
        reps=plan.reps,
        timeout_s=600.0,
    )


def _campaign(args: argparse.Namespace, plan: Plan, out: Path, payload: dict[str, Any]) -> None:
    from cvmfs_modelio.campaign.execute import execute
    from cvmfs_modelio.campaign.store import ResultsStore
    from cvmfs_modelio.campaign.summary import HEADER as SUMMARY_HEADER
    from cvmfs_modelio.campaign.summary import summary_rows
    from cvmfs_modelio.cli._progress import progress_for
    from cvmfs_modelio.core.tables import format_table
    from cvmfs_modelio.report.render import ReportInputs, write_report
    from cvmfs_modelio.stats.fit import fit_store
    from cvmfs_modelio.stats.realclient import fit_real_client
    from cvmfs_modelio.stats.recommend import Scenario, recommend
    from cvmfs_modelio.stats.results import load_results
    from cvmfs_modelio.stats.textout import format_validation
    from cvmfs_modelio.stats.validate import validate
    from cvmfs_modelio.stats.verdict import (
        format_validation_line,
        format_verdicts,
        prefetch_finding,
        verdicts,
    )

    shared = Path(args.shared)
    models, notes = corpus(shared, plan)
    for n in notes:
        print(n)
    spec = demo_spec(models, plan, args.bandwidth, args.client_profile)
    results = out / "results"
    payload["results"] = str(results.resolve())
    payload["campaign"] = spec.canonical()
    _say(
        f"campaign: {len(models)} models x {len(spec.matrix.chunking)} chunk configurations x "
        f"{len(plan.rtts_ms)} RTTs x cold/warm/hot x {plan.reps} repetitions"
    )
    with progress_for() as progress:
        summary = execute(spec, results, progress=progress)
    payload["measured"] = summary.stats.measured
    payload["failed"] = summary.stats.failed
    store = ResultsStore.open(results)
    print()
    bw = units.fmt_rate(args.bandwidth) if args.bandwidth else "unlimited bandwidth"
    print(
        f"Emulated CVMFS ({bw}, client profile {args.client_profile}): ONNX Runtime time to "
        f"first inference (session + first run), cold/warm/hot, medians of {plan.reps}"
    )
    print(format_table(SUMMARY_HEADER, summary_rows(store.measurements())))
    sys.stdout.flush()

    _say(f"fitting the cost model ({plan.boot} bootstrap refits)")
    res = load_results(results)
    fit = fit_store(res, args.client_profile, n_boot=plan.boot)
    payload["fit"] = fit.to_dict()
    _say("recommending")
    sc = Scenario(round(SCENARIO_RTT_MS * 1e6), args.bandwidth)
    rec = recommend(fit, "cold-start", sc)
    payload["recommendation"] = rec.to_dict()
    _say("validating on models and RTTs the fit has not seen")
    with progress_for() as progress:
        val = validate(
            fit, rec, None, plan.validate_rtts_ms, reps=plan.validate_reps, progress=progress
        )
    payload["validation"] = val.to_dict()
    print()
    print(format_validation(val))
    _say("writing the report")
    tv = shared / TIMING_VECTORS
    real = fit_real_client(tv) if tv.is_file() else None
    paths = write_report(ReportInputs(res, fit, rec, val, real), out / "report", _say)
    payload["report"] = {k: str(Path(v).resolve()) for k, v in paths.items()}
    vs = verdicts(fit, rec)
    payload["verdict"] = [v.to_dict() for v in vs]
    payload["prefetch_finding"] = prefetch_finding(rec)

    print()
    print(
        f"Verdict for {rec.scenario.label()}, client profile {fit.client_profile} "
        f"(fit: {fit.n_fetches} fetches, leave-one-model-out median error "
        f"{100 * fit.cv_median_abs_rel_err:.1f}%):"
    )
    for line in format_verdicts(vs):
        print(f"  {line}")
    print(f"  validation: {format_validation_line(val)}")
    print("  prefetch (predicted by the fit; cvmfs2 has none):")
    for line in payload["prefetch_finding"]:
        print(f"    {line}")
    print(f"  report: {payload['report']['html']}")
    print(f"  results store: {results} (cvmfs-modelio recommend/report read it)")
