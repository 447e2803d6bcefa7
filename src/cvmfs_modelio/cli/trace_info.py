"""``cvmfs-modelio trace-info TRACE``: per-file totals of a trace."""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.trace.summary import file_totals, format_table
from cvmfs_modelio.trace.tracefs import status_line
from cvmfs_modelio.trace.tracer import read_trace


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("trace-info", help="per-file totals of a trace")
    p.add_argument("trace", metavar="TRACE", help="trace directory or event file")
    p.add_argument("--json", metavar="PATH", help="also write the totals as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_dest(args.json)
    log = read_trace(args.trace)
    totals = file_totals(log)
    procs = [p for p in log.meta.get("processes", []) if p.get("source") == "preload"]
    print(f"{args.trace}: {len(procs)} process image(s), {log.events.size} events")
    print(format_table(totals))
    print(f"kernel tracepoints: {status_line(log.meta.get('kernel'))}")
    if args.json:
        doc = {
            "trace": str(args.trace),
            "files": [t.as_dict() for t in totals],
            "processes": procs,
            "kernel": log.meta.get("kernel"),
            # where the trace was taken (the envelope's environment is where it was read)
            "traced_on": {"kernel": platform.release(), "machine": platform.machine()},
        }
        # 2: the envelope (schema, created_utc, command_line, environment); host -> traced_on
        write_json(
            args.json,
            doc,
            schema="trace-info",
            version=2,
            measured=[t.path for t in totals if os.path.exists(t.path)],
        )
    return 0
