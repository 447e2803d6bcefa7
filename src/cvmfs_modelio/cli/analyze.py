"""``cvmfs-modelio analyze TRACE --layout ...``: what a recorded load costs against a layout."""

from __future__ import annotations

import argparse
import os
from typing import Any

from cvmfs_modelio.chunks.analysis import analyze, requests_from_events
from cvmfs_modelio.chunks.layouts import Layout, layout_for, parse_chunk_spec, read_cvmfs_layout
from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.cli._chunkopts import (
    add_fetch_model_args,
    fetch_model,
    load_trace,
    pick_file,
)
from cvmfs_modelio.cli.chunks import describe
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("analyze", help="a trace against a chunk layout: chunks, bytes, time")
    p.add_argument("trace", metavar="TRACE", help="event file (docs/event-format.md)")
    p.add_argument(
        "--layout",
        required=True,
        metavar="FILE|SPEC",
        help="a file (its CVMFS layout, else xor32 4MiB/8MiB/16MiB), 'cvmfs', or a chunker: "
        "MIN/AVG/MAX (xor32), fastcdc:MIN/AVG/MAX, tensor-aware:MIN/AVG/MAX, fixed:SIZE, whole",
    )
    p.add_argument("--file", metavar="PATH", help="which file of the trace (its recorded path)")
    add_fetch_model_args(p)
    p.add_argument(
        "--timeline",
        type=T.number(int, 0),
        default=20,
        metavar="N",
        help="list the first N chunk touches (0: none)",
    )
    p.add_argument("--json", metavar="PATH", help="write the analysis as JSON ('-': stdout)")
    p.set_defaults(func=run)


def resolve_layout(text: str, traced_path: str) -> Layout:
    """``--layout``: an existing file, ``cvmfs`` (xattrs of the traced file), or a chunker."""
    if text == "cvmfs":
        return read_cvmfs_layout(traced_path)
    if os.path.exists(text):
        return layout_for(text)
    try:
        spec = parse_chunk_spec(text)
    except UsageError as e:
        raise UsageError(f"--layout: {text!r} is no file, and no chunker: {e}") from None
    if not os.path.exists(traced_path):
        raise UsageError(f"{traced_path}: the traced file is not here to chunk; pass --layout FILE")
    return layout_for(traced_path, spec, source="compute")


def run(args: argparse.Namespace) -> int:
    model = fetch_model(args)
    check_dest(args.json)
    log = load_trace(args.trace)
    entry = pick_file(log, args.trace, args.file)
    check_dest(args.json, [entry.path])
    layout = resolve_layout(args.layout, entry.path)
    if entry.size > 0 and entry.size != layout.file_size:
        raise UsageError(
            f"{args.trace}: {entry.path} was {entry.size} bytes when traced, "
            f"the layout covers {layout.file_size}"
        )
    req = requests_from_events(log.events, layout.file_size, entry.file_id)
    a = analyze(req, layout, model)
    t0 = int(log.events["t_start_ns"].min()) if len(log.events) else 0
    mode = (
        "one chunk in flight per handle"
        if model.in_flight is None
        else (f"{model.in_flight} in flight")
    )
    print(f"trace {args.trace}: {entry.path}, {fmt_bytes(layout.file_size)}")
    print(f"layout: {describe(layout)}, {layout.n_chunks} chunk(s)")
    rows = [
        ["reads", str(a.n_reads)],
        ["bytes requested", f"{fmt_bytes(a.requested_bytes)} ({a.requested_bytes})"],
        [
            "distinct bytes requested",
            f"{fmt_bytes(a.unique_requested_bytes)} ({a.unique_requested_bytes})",
        ],
        ["chunks touched", f"{a.n_fetches} of {a.n_chunks}"],
        ["bytes fetched", f"{fmt_bytes(a.fetched_bytes)} ({a.fetched_bytes})"],
        ["read amplification", f"{a.amplification:.3f}"],
        ["fetches", str(a.n_fetches)],
        [
            f"est. fetch time ({mode})",
            f"{fmt_ns(a.fetch_time_ns)} at RTT {fmt_ns(model.rtt_ns)}, "
            f"{fmt_bytes(model.bandwidth)}/s",
        ],
    ]
    print(format_table(["metric", "value"], rows))
    if args.timeline > 0 and a.n_fetches:
        tl = []
        for k, (c, t) in enumerate(
            zip(a.chunks_touched.tolist(), a.first_touch_ns.tolist(), strict=True)
        ):
            if k >= args.timeline:
                break
            tl.append(
                [
                    str(k),
                    str(c),
                    str(int(layout.offsets[c])),
                    fmt_bytes(int(layout.sizes[c])),
                    fmt_ns(t - t0),
                ]
            )
        print(format_table(["#", "chunk", "offset", "size", "first touch"], tl))
        if a.n_fetches > args.timeline:
            print(f"... {a.n_fetches - args.timeline} more (--timeline N)")
    if args.json:
        write_json(
            args.json,
            {
                "command": "analyze",
                "trace": args.trace,
                "file": entry.path,
                "layout": layout.to_dict(with_chunks=False),
                "model": {
                    "rtt_ns": model.rtt_ns,
                    "bandwidth_bytes_per_s": model.bandwidth,
                    "in_flight": model.in_flight,
                },
                "analysis": a.to_dict(),
            },
            schema="analyze",
            version=2,  # 2: model.bandwidth -> bandwidth_bytes_per_s
            measured=[entry.path],
        )
    return 0
