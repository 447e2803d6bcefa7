"""``cvmfs-modelio cvmfs-bench export|run``: model loading in the CVMFS client benchmark.

``export DIR --repo NAME MODELS...`` writes the bash scripts (one per model, exit 0 on
success), the YAML ``avail_cmds`` entries and an example configuration for the CVMFS
client performance benchmark; ``run DIR`` runs such an export as that benchmark does (cold,
warm, hot; ``--threads`` copies in parallel) against ``/cvmfs/NAME`` or ``--mount`` (a real
or emulated mount) and writes its CSV shape (``cvmfs_modelio.campaign.cvmfs_bench``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.cvmfs_bench import LOADERS, export, read_export, run_command, write_csv


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "cvmfs-bench",
        help="scripts, YAML and CSV of the CVMFS client performance benchmark",
        description="model loading in the CVMFS client performance benchmark: export, run",
    )
    verbs = p.add_subparsers(dest="bench_command", metavar="VERB", parser_class=type(p))
    verbs.required = True

    e = verbs.add_parser("export", help="write benchmark scripts and avail_cmds YAML for models")
    e.add_argument("dir", metavar="DIR", help="output directory (created; must hold no export)")
    e.add_argument("--repo", required=True, help="repository name, e.g. cms.cern.ch (required)")
    e.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="model paths in the repository (/cvmfs/REPO/a/b.onnx or a/b.onnx)",
    )
    e.add_argument(
        "--loader", default="ort", choices=LOADERS, help="how the scripts load the model (ort)"
    )
    e.set_defaults(func=run_export)

    r = verbs.add_parser("run", help="run an export cold/warm/hot and write the benchmark CSV")
    r.add_argument("dir", metavar="DIR", help="a directory written by cvmfs-bench export")
    r.add_argument(
        "--mount",
        default=None,
        metavar="PATH",
        help="where the repository is mounted (default: /cvmfs/REPO); an emulated mount works",
    )
    r.add_argument("--reps", type=int, default=5, help="repetitions per cache state (5)")
    r.add_argument("--threads", type=int, default=1, help="copies run in parallel (1)")
    r.add_argument("--commands", default=None, help="comma-separated command names (default: all)")
    r.add_argument("--client-config", default="default", help="label in the CSV name (default)")
    r.add_argument("--timeout", type=float, default=600.0, help="per script run, seconds (600)")
    r.add_argument(
        "-o", "--output", default=None, metavar="OUTDIR", help="CSV directory (default: DIR/data)"
    )
    r.set_defaults(func=run_run)


def run_export(args: argparse.Namespace) -> int:
    cmds = export(args.dir, args.repo, args.models, args.loader)
    for c in cmds:
        print(f"{c.name}: {Path(args.dir) / c.script} (/cvmfs/{c.repo}/{c.model})")
    print(f"avail_cmds entries: {Path(args.dir) / 'avail_cmds.yaml'}")
    print(f"example configuration: {Path(args.dir) / 'config_benchmark.yaml'}")
    return 0


def run_run(args: argparse.Namespace) -> int:
    from cvmfs_modelio.core.errors import UsageError

    d = Path(args.dir)
    cmds = read_export(d)
    if args.commands:
        wanted = [c.strip() for c in args.commands.split(",") if c.strip()]
        unknown = sorted(set(wanted) - {c.name for c in cmds})
        if unknown:
            names = ", ".join(c.name for c in cmds)
            raise UsageError(f"--commands: {unknown[0]!r} is not in {d} (it has {names})")
        cmds = [c for c in cmds if c.name in wanted]
    outdir = Path(args.output) if args.output else d / "data"

    def say(msg: str) -> None:
        sys.stderr.write(f"[cvmfs-bench] {msg}\n")
        sys.stderr.flush()

    for c in cmds:
        root = Path(args.mount) if args.mount else Path("/cvmfs") / c.repo
        res = run_command(
            d,
            c,
            root,
            reps=args.reps,
            threads=args.threads,
            client_config=args.client_config,
            timeout_s=args.timeout,
            say=say,
        )
        path = write_csv(outdir, res)
        real = {col: res.data[col]["real"] for col in ("cold_cache", "warm_cache", "hot_cache")}
        medians = "  ".join(
            f"{col.split('_')[0]} {sorted(v)[len(v) // 2]:.3f} s" for col, v in real.items()
        )
        print(f"{c.name}: real (median) {medians}  -> {path}")
    return 0
