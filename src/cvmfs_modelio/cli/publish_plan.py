"""``cvmfs-modelio publish-plan DIR...``: what publishing model directories on CVMFS will do."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes
from cvmfs_modelio.deploy.plan import DEFAULT_QUOTA_MB, Plan, PlanParams, make_plan


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "publish-plan",
        help="plan publishing model directories on CVMFS: objects, warnings, dirtab, bundles",
        description="For every file of each DIR: size, whether CVMFS chunks it, its objects "
        "(the CVMFS-exact xor32 chunker) and their compressed sizes, and warnings with their "
        "reason; non-model files are listed and skipped.  Ends with a suggested "
        ".cvmfsdirtab, the bundle specs and the server.conf lines.  Reads only.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="directory to publish (its root = /)")
    for opt, dest, default in (
        ("--min", "min_size", "4MiB"),
        ("--avg", "avg_size", "8MiB"),
        ("--max", "max_size", "16MiB"),
    ):
        p.add_argument(
            opt,
            dest=dest,
            type=T.size(),
            default=units.parse_size(default),
            metavar="SIZE",
            help=f"CVMFS_{opt[2:].upper()}_CHUNK_SIZE, bytes ({units.SIZE_HELP}; "
            f"default {default})",
        )
    p.add_argument(
        "--no-chunking",
        action="store_true",
        help="CVMFS_USE_FILE_CHUNKING=false: every file one object",
    )
    p.add_argument(
        "--quota-mb",
        type=T.number(int, 1),
        default=DEFAULT_QUOTA_MB,
        metavar="MB",
        help="client cache quota CVMFS_QUOTA_LIMIT, MB",
    )
    p.add_argument(
        "--squid-max-object",
        type=T.size(1),
        default=4 << 20,
        metavar="SIZE",
        help="the site squid's maximum_object_size, bytes (default 4MiB, squid's default)",
    )
    p.add_argument(
        "--no-compressed-size",
        action="store_true",
        help="skip zlib-compressing every object (faster; the squid check then uses "
        "uncompressed sizes)",
    )
    p.add_argument(
        "--repo-prefix",
        default="",
        metavar="PATH",
        help="repository path DIR will be published at, e.g. /models (default: the root)",
    )
    p.add_argument("--json", metavar="PATH", help="write the plan as JSON ('-': stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    defaults = PlanParams()
    chunk_given = (args.min_size, args.avg_size, args.max_size) != (
        defaults.min_size,
        defaults.avg_size,
        defaults.max_size,
    )
    if args.no_chunking and chunk_given:
        raise UsageError("--no-chunking cannot be combined with --min/--avg/--max")
    params = PlanParams(
        min_size=args.min_size,
        avg_size=args.avg_size,
        max_size=args.max_size,
        chunking=not args.no_chunking,
        quota_mb=args.quota_mb,
        squid_max_object=args.squid_max_object,
        compressed_sizes=not args.no_compressed_size,
        repo_prefix=args.repo_prefix,
    )
    params.validate()
    check_dest(args.json, args.dirs)
    plans = [
        make_plan(d, params, progress=lambda s: print(s, file=sys.stderr, flush=True))
        for d in args.dirs
    ]
    if args.json != "-":
        for pl in plans:
            print_plan(pl)
    if args.json:
        write_json(
            args.json,
            {"command": "publish-plan", "plans": [pl.to_json() for pl in plans]},
            schema="publish-plan",
            version=1,
            measured=args.dirs,
        )
    return 0


def print_plan(pl: Plan) -> None:
    rows = []
    for f in pl.files:
        if f.kind == "other":
            rows.append(
                [f.path, "skipped (not a model)", fmt_bytes(f.size_bytes), "", "", "", "", ""]
            )
            continue
        comp = fmt_bytes(sum(f.compressed_sizes)) if f.compressed_sizes is not None else "-"
        rows.append(
            [
                f.path,
                f.kind + (f" ({f.format})" if f.format else ""),
                fmt_bytes(f.size_bytes),
                "yes" if f.chunked else "no",
                str(len(f.object_sizes)),
                fmt_bytes(min(f.object_sizes)) + ".." + fmt_bytes(max(f.object_sizes)),
                comp,
                str(len(f.warnings)),
            ]
        )
    print(f"# publish plan of {pl.root}")
    print(
        format_table(
            ["file", "kind", "size", "chunked", "objects", "object sizes", "compressed", "warn"],
            rows,
        )
    )
    if pl.warnings:
        print("\n# warnings")
        for w in pl.warnings:
            print(f"{w.path}: [{w.code}] {w.message}")
    else:
        print("\n# warnings: none")
    print("\n# suggested .cvmfsdirtab (one nested catalog per model directory)")
    print("\n".join(pl.dirtab) if pl.dirtab else "# (no model directories below the root)")
    print(
        "\n# bundle specs (publish each next to its trigger; the client needs "
        "CVMFS_PREFETCH_FILEBUNDLES=yes)"
    )
    if not pl.bundles:
        print("# (no model has companion files)")
    for path, spec in pl.bundles.items():
        print(f"## {path}")
        print(spec.to_json_text(), end="")
    print("\n# server.conf (/etc/cvmfs/repositories.d/<repo>/server.conf)")
    print("\n".join(pl.server_conf))
    if pl.client_conf:
        print("\n# client (/etc/cvmfs/default.local)")
        print("\n".join(pl.client_conf))
    if pl.squid_conf:
        print("\n# site squid (squid.conf)")
        print("\n".join(pl.squid_conf))
