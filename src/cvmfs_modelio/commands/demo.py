"""``cvmfs-modelio demo``: synthetic ONNX models probed cold and warm, one table.

Runs anywhere (no ``/cvmfs`` needed): it writes a ~50 MB model with embedded weights and
the same model with external data to a temporary directory, then probes each file with
sequential 1 MiB, random 4 KiB and mmap random 4 KiB patterns, page cache cold and warm.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvmfs_modelio import units
from cvmfs_modelio.jsonout import check_dest, write_json
from cvmfs_modelio.probe import ProbeSummary, probe


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
            "file_size": self.file_size,
            "workload": self.workload,
            "cache": self.cache,
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
) -> list[DemoRow]:
    """Generate the models in ``workdir`` and probe each file cold then warm; the rows."""
    rows: list[DemoRow] = []
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
    "resident before→after",
)


def format_rows(rows: Sequence[DemoRow]) -> str:
    """The demo's one table."""
    lines = [HEADER]
    for r in rows:
        s = r.summary
        lines.append(
            (
                r.file,
                units.fmt_bytes(r.file_size),
                r.workload,
                r.cache,
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
    return "\n".join(out)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("demo", help="probe synthetic ONNX models cold and warm (no /cvmfs needed)")
    p.add_argument("--size", default="50MiB", help="weight bytes of each model (50MiB)")
    p.add_argument("--json", dest="json_out", default=None, help="write all rows to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    weight_bytes = units.parse_size(args.size, "--size")
    check_dest(args.json_out)
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-demo-") as tmp:
        rows = run_demo(Path(tmp), weight_bytes=weight_bytes)
    print(format_rows(rows))
    if args.json_out is not None:
        write_json(args.json_out, {"rows": [r.to_dict() for r in rows]})
    return 0
