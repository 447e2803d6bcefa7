"""``cvmfs-modelio sim mount URL MOUNTPOINT``: mount an emulated CVMFS store with FUSE."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cvmfs_modelio.cli import _types as T
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.mount import (
    MountOptions,
    SimMount,
    default_cache_dir,
    serve_foreground,
    spawn_detached_wrapper,
)


def register(verbs: argparse._SubParsersAction[Any]) -> None:
    p = verbs.add_parser(
        "mount",
        help="mount a store served over HTTP with the emulated CVMFS client",
        description="Mount the store at URL (served by `sim serve`) read-only on MOUNTPOINT "
        "with cmio-simfs, which fetches, verifies and caches objects like the real cvmfs2 "
        "client.  Returns once the mount is ready.",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--cache", help=f"client cache directory (default {default_cache_dir()})")
    p.add_argument(
        "--rtt-ms",
        type=T.number(float, 0, 1e6),
        default=0.0,
        metavar="MS",
        help="emulated round-trip time, milliseconds (default 0: none)",
    )
    p.add_argument(
        "--bandwidth",
        type=T.bandwidth(),
        default=0,
        metavar="RATE",
        help=f"emulated bandwidth ({units.BANDWIDTH_HELP}; default 0)",
    )
    p.add_argument("--parallel", type=int, default=16, help="HTTP connections (default 16)")
    p.add_argument(
        "--prefetch", type=int, default=0, help="chunks fetched ahead (default 0, as cvmfs2)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="network timeout (s, default 10)")
    p.add_argument("--retries", type=int, default=1, help="retries per object (default 1)")
    p.add_argument("--proxy", help="HTTP proxy URL between client and server (e.g. squid)")
    p.add_argument("--log", help="event file of every FUSE request and fetch (written at unmount)")
    p.add_argument("--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> MountOptions:
    opts = MountOptions(
        cache=Path(args.cache) if args.cache else None,
        rtt_ms=args.rtt_ms,
        bandwidth=args.bandwidth,
        parallel=args.parallel,
        prefetch=args.prefetch,
        timeout_s=args.timeout,
        retries=args.retries,
        log=Path(args.log) if args.log else None,
        proxy=args.proxy,
    )
    opts.validate()
    return opts


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    mount = SimMount(args.url, args.mountpoint, opts)
    if args.foreground or args.ready_fd is not None:
        return serve_foreground(
            mount, args.ready_fd, lambda: print(f"mounted {mount.url} on {mount.path}")
        )
    if opts.netem:
        # The network emulator lives in a Python process: keep one running with the mount.
        tail = [a for a in sys.argv[sys.argv.index("mount") + 1 :] if a != "--foreground"]
        if not tail:
            raise UsageError("sim mount: cannot re-run the command line in the background")
        spawn_detached_wrapper(tail, str(mount.path))
    else:
        mount.start(detach=True)
    print(f"mounted {mount.url} on {mount.path}")
    return 0
