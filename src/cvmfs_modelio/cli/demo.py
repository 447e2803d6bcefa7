"""``cvmfs-modelio demo``: synthetic ONNX models probed locally, then loaded from emulated CVMFS.

Runs anywhere (no ``/cvmfs`` needed): it writes a ~50 MB model with embedded weights and
the same model with external data to a temporary directory, then

1. probes each file with sequential 1 MiB, random 4 KiB and mmap random 4 KiB patterns,
   page cache cold and warm (the first table);
2. publishes both models with each chunk configuration, serves and mounts them behind an
   emulated WAN and times ONNX Runtime session creation and first inference cold and warm
   (the second table, ``cvmfs_modelio.campaign.experiments``).  Without FUSE (not root, no
   ``/dev/fuse``, no ``fusermount3``) it says why in one line and skips this part.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.experiments import (
    CampaignParams,
    CampaignRow,
    ModelFiles,
    campaign_payload,
    fuse_unavailable_reason,
    model_from_path,
    run_campaign,
    stderr_progress,
)
from cvmfs_modelio.campaign.experiments import format_rows as format_campaign
from cvmfs_modelio.cli.experiment import add_campaign_options, campaign_params, incomplete
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import Interrupted
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.probe.engine import ProbeSummary, probe


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
    """One measured line of the demo table."""

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
    """Write the demo models into ``workdir``; the files to probe (``.onnx`` and ``.data``)."""
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
    weight_bytes: int = 50 * 1024 * 1024,
    workloads: Sequence[Workload] = WORKLOADS,
    out: list[DemoRow] | None = None,
) -> list[DemoRow]:
    """Generate the models in ``workdir`` and probe each file cold then warm; the rows
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
    """The demo's one table."""
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


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "demo",
        help="probe synthetic ONNX models, then load them from emulated CVMFS (no /cvmfs needed)",
    )
    add_campaign_options(p, reps=3)
    p.add_argument("--no-cvmfs", action="store_true", help="only the local probe table")
    p.add_argument(
        "--json",
        dest="json_out",
        default=None,
        metavar="PATH",
        help="write both tables, every repetition and the environment here (also after an "
        "interrupt: what was measured, marked complete: false)",
    )
    p.set_defaults(func=run)


def demo_models(workdir: Path) -> list[ModelFiles]:
    """The demo's two models as the campaign sees them (written by ``model_files``)."""
    return [model_from_path(workdir / "embedded.onnx"), model_from_path(workdir / "external.onnx")]


def run(args: argparse.Namespace) -> int:
    check_dest(args.json_out)
    params = campaign_params(args)
    params.validate()
    payload: dict[str, Any] = {}
    say = stderr_progress()
    rows: list[DemoRow] = []
    crows: list[CampaignRow] = []
    try:
        _run(args, params, payload, rows, crows, say)
    except Interrupted as e:
        # Children stopped, mounts gone, temporary directories removed: keep what was done.
        if args.json_out is not None:
            payload["rows"] = [r.to_dict() for r in rows]
            if "cvmfs" not in payload and crows:
                payload["cvmfs"] = campaign_payload(crows, params)
            write_json(
                args.json_out,
                {**payload, **incomplete(e)},
                schema="demo",
                version=DEMO_SCHEMA_VERSION,
            )
        raise
    if args.json_out is not None:
        write_json(
            args.json_out,
            {**payload, "complete": True},
            schema="demo",
            version=DEMO_SCHEMA_VERSION,
        )
    return 0


# 2: units in keys (probe rows as probe schema 2, campaign as campaign schema 2), complete
DEMO_SCHEMA_VERSION = 2


def _run(
    args: argparse.Namespace,
    params: CampaignParams,
    payload: dict[str, Any],
    rows: list[DemoRow],
    crows: list[CampaignRow],
    say: Callable[[str], None],
) -> None:
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-demo-") as tmp:
        say("probing the synthetic models on local disk")
        run_demo(Path(tmp), weight_bytes=args.size, out=rows)
        print("Local disk: probe patterns, page cache cold and warm")
        print(format_rows(rows))
        sys.stdout.flush()
        payload["rows"] = [r.to_dict() for r in rows]
        reason = "--no-cvmfs given" if args.no_cvmfs else fuse_unavailable_reason()
        if reason is None:
            run_campaign(demo_models(Path(tmp)), params, say, out=crows)
            print()
            bw = units.fmt_rate(params.bandwidth) if params.bandwidth else "unlimited bandwidth"
            print(
                f"Emulated CVMFS (RTT {params.rtt_ms:g} ms, {bw}): ONNX Runtime session "
                f"creation and first inference, cold and warm client cache, "
                f"medians of {params.reps}"
            )
            print(format_campaign(crows))
            payload["cvmfs"] = campaign_payload(crows, params)
        else:
            print()
            print(f"Emulated CVMFS: not run: {reason}")
            payload["cvmfs"] = {"skipped": reason}
