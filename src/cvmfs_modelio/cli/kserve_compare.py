"""``cvmfs-modelio kserve-compare MODEL``: KServe's time to first inference, per storage path.

Download-then-load (KServe's storage initializer over HTTP), lazy CVMFS (read in place
from the emulated client's mount, as a cvmfs-csi volume presents it) and local disk, cold
and hot, at each round-trip time and bandwidth (``cvmfs_modelio.serving.compare``).
Needs the optional extra: ``pip install '.[kserve]'``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import Interrupted

# 1: first layout
KSERVE_COMPARE_SCHEMA_VERSION = 1


def register(sub: argparse._SubParsersAction[Any]) -> None:
    from cvmfs_modelio.serving import params as c

    p = sub.add_parser(
        "kserve-compare",
        help="KServe's time to first inference: storage-initializer download vs lazy CVMFS "
        "vs local disk (needs pip install '.[kserve]')",
    )
    p.add_argument("model", metavar="MODEL", help="an .onnx model (with its external data)")
    p.add_argument(
        "--rtt-ms",
        dest="rtts_ms",
        type=T.comma_list(T.number(float, 0, 1e6)),
        default=c.DEFAULT_RTTS_MS,
        metavar="LIST",
        help="emulated WAN round-trip times in ms, comma-separated (default 0,10,25)",
    )
    p.add_argument(
        "--bandwidth",
        dest="bandwidth",
        type=T.comma_list(T.bandwidth()),
        default=c.DEFAULT_BANDWIDTHS,
        metavar="LIST",
        help=f"emulated WAN bandwidths, comma-separated ({units.BANDWIDTH_HELP}; default 100MiB/s)",
    )
    p.add_argument(
        "--states",
        default=",".join(c.STATES),
        metavar="LIST",
        help="cache states: cold (client cache wiped, page cache dropped), hot (nothing cleared)",
    )
    p.add_argument(
        "--paths",
        default=",".join(c.PATHS),
        metavar="LIST",
        help="download (KServe's storage initializer), cvmfs (read in place from the "
        "mount), local (local disk)",
    )
    p.add_argument(
        "--reps", type=T.number(int, 1, 1000), default=c.DEFAULT_REPS, help="repetitions"
    )
    p.add_argument(
        "--threads",
        type=T.number(int, 1, 64),
        default=1,
        help="ONNX Runtime intra-op threads in the model server",
    )
    p.add_argument(
        "--timeout",
        type=T.number(float, 0.001, 86400),
        default=c.DEFAULT_TIMEOUT_S,
        help="seconds one server start may take to its first answer",
    )
    p.add_argument(
        "--json",
        dest="json_out",
        default=None,
        metavar="PATH",
        help="write the rows, every run and the environment here",
    )
    p.set_defaults(func=run)


def _progress() -> Callable[[str], None]:
    """Progress on stderr: ``[kserve-compare 12.3s] message``."""
    import sys
    import time

    t0 = time.monotonic()

    def say(msg: str) -> None:
        sys.stderr.write(f"[kserve-compare {time.monotonic() - t0:5.1f}s] {msg}\n")
        sys.stderr.flush()

    return say


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def run(args: argparse.Namespace) -> int:
    import sys

    from cvmfs_modelio.core.jsonout import check_dest, write_json
    from cvmfs_modelio.serving import compare as c
    from cvmfs_modelio.serving.params import CompareParams

    check_dest(args.json_out, [args.model])
    params = CompareParams(
        rtts_ms=tuple(args.rtts_ms),
        bandwidths=tuple(args.bandwidth),
        states=_names(args.states),
        paths=_names(args.paths),
        reps=args.reps,
        threads=args.threads,
        timeout_s=args.timeout,
    )
    params.validate()
    runs: list[c.Run] = []
    try:
        result = c.run_compare(args.model, params, _progress(), runs_out=runs)
    except Interrupted as e:
        if args.json_out is not None:
            write_json(
                args.json_out,
                {
                    "model": args.model,
                    "rows": [vars(r) for r in c.summarize(runs)] if runs else [],
                    "runs": [vars(r) for r in runs],
                    "complete": False,
                    "interrupted_by": e.name,
                },
                schema="kserve-compare",
                version=KSERVE_COMPARE_SCHEMA_VERSION,
                measured=[args.model],
            )
        raise
    print(
        f"KServe {result.versions.get('kserve')}: process start to the first v2 REST "
        f"inference of {args.model} ({units.fmt_bytes(result.model_bytes)}), medians of "
        f"{params.reps}"
    )
    print(c.format_rows(result.rows))
    for n in result.notes:
        print(f"note: {n}")
    sys.stdout.flush()
    if args.json_out is not None:
        write_json(
            args.json_out,
            {**result.to_payload(), "complete": True},
            schema="kserve-compare",
            version=KSERVE_COMPARE_SCHEMA_VERSION,
            measured=[args.model],
        )
    return 0
