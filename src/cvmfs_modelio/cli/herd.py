"""``cvmfs-modelio herd MODEL --clients N``: a site's worth of clients behind one squid.

N emulated worker nodes (each its own ``cmio-simfs`` mount, cache and load process) start
the same ONNX Runtime load at the same moment through one squid in front of one stratum
behind the emulated WAN (``cvmfs_modelio.herd.run``).  Prints, per chunk configuration,
the time to first inference over the clients (p50/p90/max), requests and bytes at the
stratum and at the squid, and the peak number of concurrent stratum requests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.experiments import model_from_path, parse_configs
from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.herd.report import SCHEMA, SCHEMA_VERSION, format_report, payload
from cvmfs_modelio.herd.run import HerdParams, run_herd

_ONOFF = {"on": True, "off": False}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "herd",
        help="N clients load one model at once through one squid (a site in a box)",
        description="N emulated worker nodes (own mount, cache and process each) start the "
        "same ONNX Runtime load at once through one squid in front of one stratum behind "
        "the emulated WAN; time to first inference and stratum/squid load per chunk "
        "configuration.",
    )
    p.add_argument("model", metavar="MODEL", help="ONNX model file (external data goes with it)")
    p.add_argument(
        "--clients", type=T.number(int, 1, 4096), default=4, metavar="N", help="worker nodes"
    )
    p.add_argument(
        "--proxy",
        choices=("squid", "none"),
        default="squid",
        help="site proxy in front of the stratum (none: every client goes to the stratum)",
    )
    p.add_argument(
        "--collapsed-forwarding",
        choices=("on", "off"),
        default="on",
        help="squid's collapsed_forwarding: concurrent misses of one object become one "
        "stratum request",
    )
    p.add_argument(
        "--squid-state",
        choices=("cold", "warm"),
        default="cold",
        help="cold: empty squid; warm: one unmeasured load through it before the herd",
    )
    p.add_argument(
        "--rtt-ms",
        type=T.number(float, 0, 1e6),
        default=10.0,
        metavar="MS",
        help="round-trip time between the site and the stratum, milliseconds",
    )
    p.add_argument(
        "--bandwidth",
        type=T.bandwidth(),
        default="100MiB",
        metavar="RATE",
        help=f"the stratum's uplink, shared by all connections ({units.BANDWIDTH_HELP})",
    )
    p.add_argument(
        "--configs",
        default="4MiB/8MiB/16MiB,whole",
        metavar="SPECS",
        help="chunk configurations, comma-separated: MIN/AVG/MAX (CVMFS xor32) or whole",
    )
    p.add_argument(
        "--parallel",
        type=T.number(int, 1, 1024),
        default=16,
        metavar="N",
        help="HTTP connections per client (cmio-simfs --parallel)",
    )
    p.add_argument(
        "--client-profile",
        choices=("cvmfs-2.12", "fast"),
        default="cvmfs-2.12",
        help="emulated client's per-object cost",
    )
    p.add_argument(
        "--squid-max-object",
        type=T.size(1),
        default=None,
        metavar="SIZE",
        help="squid's maximum_object_size (default: twice the largest object, >= 64 MiB)",
    )
    p.add_argument(
        "--timeout",
        type=T.number(float, 1, 86400),
        default=900.0,
        metavar="S",
        help="longest wait for the herd's loads, seconds",
    )
    p.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="scratch space for stores, mounts and caches (default: $TMPDIR)",
    )
    p.add_argument("--json", dest="json_out", default=None, help="write the rows to this file")
    p.set_defaults(func=run)


def _progress(text: str) -> None:
    sys.stderr.write(f"herd: {text}\n")


def run(args: argparse.Namespace) -> int:
    from cvmfs_modelio.core.errors import UsageError

    check_dest(args.json_out)
    if args.workdir is not None and not Path(args.workdir).is_dir():
        raise UsageError(f"--workdir {args.workdir}: not a directory")
    model = model_from_path(args.model)
    params = HerdParams(
        clients=args.clients,
        configs=tuple(parse_configs(args.configs)),
        proxy=None if args.proxy == "none" else args.proxy,
        collapsed_forwarding=_ONOFF[args.collapsed_forwarding],
        squid_state=args.squid_state,
        rtt_ms=args.rtt_ms,
        bandwidth=args.bandwidth,
        parallel=args.parallel,
        client_profile=args.client_profile,
        timeout_s=args.timeout,
        squid_max_object=args.squid_max_object,
    )
    params.validate()
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-herd-", dir=args.workdir) as tmp:
        rep = run_herd(model, params, Path(tmp), progress=_progress)
    print(format_report(rep))
    if args.json_out:
        write_json(
            args.json_out,
            payload(rep),
            schema=SCHEMA,
            version=SCHEMA_VERSION,
            measured=list(model.files),
        )
    return 0
