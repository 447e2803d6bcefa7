"""``cvmfs-modelio ort-load MODEL``: one model load, phase by phase, with its I/O and tensors."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "ort-load",
        help="load a model (ONNX Runtime or a safetensors loader) and show each phase's I/O",
        description="Create a session for MODEL and run it twice in a fresh child under the "
        "I/O tracer; print per phase the wall time, bytes read and paged in, I/O wait, FUSE "
        "requests, chunk downloads and the tensors touched.",
    )
    p.add_argument("model", metavar="MODEL", help=".onnx, .ort or .safetensors file")
    p.add_argument(
        "--state",
        choices=("cold", "warm", "hot"),
        default="cold",
        help="cache state before each load, as the CVMFS benchmark defines them: cold = "
        "client cache wiped + page cache dropped, warm = page cache dropped, hot = nothing "
        "cleared (default cold; on local disk cold = warm)",
    )
    p.add_argument(
        "--loader",
        choices=("ort", "safetensors-lazy", "safetensors-eager", "streamer"),
        default="ort",
        help="how the weights get into memory (default ort: ONNX Runtime reads the model)",
    )
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="loads (default 1)")
    p.add_argument(
        "--disable-prepacking",
        action="store_true",
        help="session.disable_prepacking=1 (default: ONNX Runtime pre-packs the weights)",
    )
    p.add_argument(
        "--threads", type=int, default=1, metavar="T", help="intra-op threads (default 1)"
    )
    mm = p.add_mutually_exclusive_group()
    mm.add_argument(
        "--use-mmap",
        dest="mmap",
        action="store_const",
        const=True,
        default=None,
        help=".ort: memory-map the model (session.use_memory_mapped_ort_model=1); .onnx: "
        "external data mapped (ONNX Runtime's default)",
    )
    mm.add_argument(
        "--no-mmap",
        dest="mmap",
        action="store_const",
        const=False,
        help=".ort: read it whole (ONNX Runtime's default); .onnx: read external data with "
        "read() and hand it to ONNX Runtime (default: neither, ONNX Runtime's default)",
    )
    p.add_argument(
        "--graph",
        metavar="ONNX",
        help="safetensors loaders: the ONNX graph to run with the loaded weights "
        "(default: MODEL with .onnx suffix, if it exists; none: no inference)",
    )
    p.add_argument(
        "--tensors",
        metavar="NAME,...",
        help="safetensors loaders: only these tensors (default: all)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=16,
        metavar="N",
        help="streamer: threads, each with its own file handle (default 16)",
    )
    p.add_argument(
        "--block",
        default="2MiB",
        metavar="SIZE",
        help="streamer: bytes per read call (default 2MiB)",
    )
    p.add_argument(
        "--no-trace",
        action="store_true",
        help="time the phases only: no tracer, no profiler (default: traced)",
    )
    p.add_argument(
        "--kernel",
        choices=("auto", "on", "off"),
        default="auto",
        help="kernel tracepoints for page-ins and FUSE request times (default auto: when root)",
    )
    p.add_argument("--json", metavar="OUT", help="write every repetition and phase as JSON")
    p.add_argument("--chrome", metavar="OUT", help="write a Perfetto/Chrome timeline (JSON)")
    p.add_argument("--trace-dir", metavar="DIR", help="keep the first load's trace here")
    p.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="per load (default 600 s)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from cvmfs_modelio.core.errors import UsageError
    from cvmfs_modelio.core.jsonout import check_dest, write_atomic, write_json
    from cvmfs_modelio.core.units import parse_size
    from cvmfs_modelio.ort.load import run_load
    from cvmfs_modelio.ort.tables import format_phases, summary_lines

    check_dest(args.json)
    check_dest(args.chrome)
    if args.chrome and args.no_trace:
        raise UsageError("--chrome needs a traced load (drop --no-trace)")
    block = parse_size(args.block, "--block")
    tensors = [t for t in args.tensors.split(",") if t] if args.tensors else None
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-ort-load-") as tmp:
        tdir = args.trace_dir or (str(Path(tmp) / "trace") if args.chrome else None)
        sys.stderr.write(f"ort-load: {args.model} ({args.loader}, {args.state}) ...\n")
        result = run_load(
            args.model,
            state=args.state,
            loader=args.loader,
            repeat=args.repeat,
            disable_prepacking=args.disable_prepacking,
            threads=args.threads,
            mmap=args.mmap,
            graph=args.graph,
            tensors=tensors,
            concurrency=args.concurrency,
            block_bytes=block,
            trace=not args.no_trace,
            kernel=args.kernel,
            timeout_s=args.timeout,
            trace_dir=tdir,
            display_name=args.model,
        )
        print(format_phases(result.medians()))
        for line in summary_lines(result):
            print(line)
        if args.chrome and tdir:
            import json

            from cvmfs_modelio.trace.export import timeline
            from cvmfs_modelio.trace.tracer import read_trace

            doc = timeline(read_trace(tdir))
            write_atomic(args.chrome, json.dumps(doc))
            print(f"timeline: {args.chrome} (open in https://ui.perfetto.dev)")
    if args.json:
        write_json(
            args.json,
            result.to_dict(),
            schema="ort-load",
            measured=[args.model],
        )
    return 0
