"""``cvmfs-modelio export TRACE --format chrome|timeline|csv|fio [-o OUT]``"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cvmfs_modelio.core.jsonout import check_dest, write_atomic
from cvmfs_modelio.trace.export import FORMATS, export_text
from cvmfs_modelio.trace.tracer import read_trace


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("export", help="export a trace as Chrome JSON, CSV or a fio iolog")
    p.add_argument("trace", metavar="TRACE", help="trace directory or event file")
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="chrome: a track per thread; timeline: a track per kind (ORT phases, I/O per "
        "file, page-ins, FUSE requests, chunk fetches; for ort-load traces); csv; fio iolog",
    )
    p.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_dest(args.output)
    text = export_text(read_trace(args.trace), args.format)
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
