"""``cvmfs-modelio trace [--match PREFIX ...] [-o TRACE] [--sample-us N] [--kernel MODE]
-- COMMAND ARGS...``

Imports only the standard library and :mod:`cvmfs_modelio.trace.launch`: the command's
start-up is part of the tracer's cost as a user feels it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core.jsonout import check_dest
from cvmfs_modelio.trace.launch import DEFAULT_SAMPLE_US, KERNEL_MODES, run_traced


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "trace",
        help="run a command with the I/O tracer preloaded",
        description="Run COMMAND with libcmio_preload.so preloaded; exits with its status.",
    )
    p.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="PREFIX",
        help="trace only files under this absolute path prefix (repeatable; "
        "default: all but /proc, /sys, /dev)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="TRACE",
        help="trace directory to create (default: cmio-trace-DATE-TIME in the current directory)",
    )
    p.add_argument(
        "--sample-us",
        type=T.number(int, 0),
        default=DEFAULT_SAMPLE_US,
        metavar="N",
        help=f"page-in sampling interval in microseconds (default {DEFAULT_SAMPLE_US}; "
        "0 = only at munmap and exit)",
    )
    p.add_argument(
        "--kernel",
        "--perf",
        dest="kernel",
        choices=KERNEL_MODES,
        default="auto",
        help="also record kernel tracepoints (page cache, page faults, FUSE requests) "
        "through a private tracefs instance (root only; default auto: when possible; "
        "on: warn when not; --perf is the old name)",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    out = args.output
    if out is None:
        out = time.strftime("cmio-trace-%Y%m%d-%H%M%S")
        sys.stderr.write(f"cvmfs-modelio trace: writing trace to {out}\n")
    # The traced files' file system (a CVMFS mount) is never written to.
    check_dest(out, [m for m in args.match if os.path.exists(m)], directory=True)
    return run_traced(command, out, match=args.match, sample_us=args.sample_us, kernel=args.kernel)
