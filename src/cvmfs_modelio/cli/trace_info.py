"""``cvmfs-modelio trace-info TRACE``: per-file totals of a trace."""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

from cvmfs_modelio.trace.summary import file_totals, format_table
from cvmfs_modelio.trace.tracefs import status_line
from cvmfs_modelio.trace.tracer import read_trace


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("trace-info", help="per-file totals of a trace")
    p.add_argument("trace", metavar="TRACE", help="trace directory or event file")
    p.add_argument("--json", metavar="PATH", help="also write the totals as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log = read_trace(args.trace)
    totals = file_totals(log)
    procs = [p for p in log.meta.get("processes", []) if p.get("source") == "preload"]
    print(f"{args.trace}: {len(procs)} process image(s), {log.events.size} events")
    print(format_table(totals))
    print(f"kernel tracepoints: {status_line(log.meta.get('kernel'))}")
    if args.json:
        from cvmfs_modelio.core.jsonout import write_atomic

        doc = {
            "trace": str(args.trace),
            "files": [t.as_dict() for t in totals],
            "processes": procs,
            "kernel": log.meta.get("kernel"),
            "host": {"kernel": platform.release(), "machine": platform.machine()},
        }
        write_atomic(args.json, json.dumps(doc, indent=1))
    return 0
