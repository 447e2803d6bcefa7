"""``cvmfs-modelio sim serve STORE``: serve an emulated store over HTTP on 127.0.0.1."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.jsonout import check_dest
from cvmfs_modelio.core.units import fmt_rate
from cvmfs_modelio.sim.faults import parse_fault
from cvmfs_modelio.sim.server import PROXIES, SERVERS, serve


def register(verbs: argparse._SubParsersAction[Any]) -> None:
    p = verbs.add_parser(
        "serve",
        help="serve an emulated store over HTTP (builtin or nginx, optional squid proxy)",
        description="Serve STORE on 127.0.0.1 until SIGINT/SIGTERM, logging every request.",
    )
    p.add_argument("store", metavar="STORE")
    p.add_argument(
        "--port",
        type=T.port(),
        default=0,
        help="the port clients use: the WAN emulator's when --rtt-ms/--bandwidth/--netem "
        "is given, else the stratum's (default 0: any free port)",
    )
    p.add_argument(
        "--origin-port",
        type=T.port(),
        default=0,
        help="the stratum's own port behind the WAN emulator, undelayed (default 0: any free "
        "port; only with the WAN emulator)",
    )
    p.add_argument(
        "--server", choices=SERVERS, default="builtin", help="the stratum: builtin or nginx"
    )
    p.add_argument(
        "--proxy", choices=PROXIES, help="put a site proxy in front (forward proxy; default none)"
    )
    p.add_argument(
        "--proxy-port", type=T.port(), default=0, help="the proxy's port (default 0: any free)"
    )
    p.add_argument("--log", metavar="FILE", help="stratum request log (event file), at exit")
    p.add_argument("--proxy-log", metavar="FILE", help="proxy request log (event file), at exit")
    p.add_argument(
        "--rtt-ms",
        type=T.number(float, 0, 1e6),
        default=0.0,
        metavar="MS",
        help="emulated WAN round-trip time, milliseconds (default 0: none)",
    )
    p.add_argument(
        "--bandwidth",
        type=T.bandwidth(),
        default=0,
        metavar="RATE",
        help=f"emulated WAN bandwidth ({units.BANDWIDTH_HELP}; default 0)",
    )
    p.add_argument(
        "--netem",
        action="store_true",
        help="run the WAN emulator even without --rtt-ms/--bandwidth (to measure its cost)",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND:REGEX[:TIMES[:DELAY_S]]",
        help="inject a fault (404, 500, slow, reset, truncate, corrupt, long, short, endless, "
        "other, silent; docs/store-format.md); builtin server only (default: none)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bandwidth = args.bandwidth
    for dest in (args.log, args.proxy_log):
        check_dest(dest)  # written at exit: refuse a bad path now, not after serving
    faults = [parse_fault(s) for s in args.fault]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with serve(
            args.store,
            port=args.port,
            server=args.server,
            proxy=args.proxy,
            log=args.log,
            faults=faults,
            rtt_ms=args.rtt_ms,
            bandwidth=bandwidth,
            proxy_port=args.proxy_port,
            proxy_log=args.proxy_log,
            netem=args.netem,
            origin_port=args.origin_port,
        ) as srv:
            if srv.url != srv.origin_url:
                bw = fmt_rate(bandwidth) if bandwidth else "unlimited bandwidth"
                lines = [
                    f"stratum  {srv.url}  ({args.server} through the WAN emulator: "
                    f"rtt {args.rtt_ms:g} ms, {bw}; clients use this)",
                    f"origin   {srv.origin_url}  (the stratum itself, undelayed)",
                ]
            else:
                lines = [f"stratum  {srv.url}  ({args.server}, no WAN emulator)"]
            if srv.proxy:
                lines.append(f"proxy    {srv.proxy}  (squid; use as HTTP proxy)")
            lines.append("serving until SIGINT/SIGTERM")
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            while not stop.wait(3600):
                pass
        n = len(srv.requests().events)
        sys.stdout.write(f"stopped after {n} requests\n")
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0
