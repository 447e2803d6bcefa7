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
    CLIENT_PROFILES,
    DEFAULT_PROFILE,
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
        "client.  Returns once the mount is ready.  A server that does not answer is given "
        "up after TIMEOUT x (RETRIES + 1) seconds per request (the manifest, then the "
        "catalog): with the defaults and no proxy 2 x 10 s, through a proxy 2 x 5 s.  One "
        "client per cache directory: a second mount on the same --cache is refused.",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--cache", help=f"client cache directory (default {default_cache_dir()})")
    p.add_argument(
        "--client-profile",
        choices=CLIENT_PROFILES,
        default=DEFAULT_PROFILE,
        help="what the client pays per fetched object: cvmfs-2.12 as the real client "
        "(transaction file in 4 KiB writes, download thread, SQLite LRU bookkeeping, "
        "copied replies, calibrated residual), or fast (lean, spliced replies; for "
        f"warm-read benchmarks) (default {DEFAULT_PROFILE})",
    )
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
    p.add_argument(
        "--prefetch-filebundles",
        action="store_true",
        help="CVMFS_PREFETCH_FILEBUNDLES=yes: opening a file with a .cvmfsbundle-<name> spec "
        "beside it prefetches the files it lists on a pool of fetchers, without blocking the "
        "open (CVMFS 2.14; default off, as upstream)",
    )
    p.add_argument(
        "--bundle-pool-size",
        type=T.number(int, 1, 256),
        default=8,
        metavar="N",
        help="bundle prefetch threads, CVMFS_BUNDLE_POOL_SIZE",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="connect/stall timeout through a proxy, seconds (default 5, CVMFS_TIMEOUT)",
    )
    p.add_argument(
        "--timeout-direct",
        type=float,
        default=10.0,
        help="connect/stall timeout without a proxy, seconds (default 10, CVMFS_TIMEOUT_DIRECT)",
    )
    p.add_argument(
        "--retries", type=int, default=1, help="retries per request (default 1, CVMFS_MAX_RETRIES)"
    )
    p.add_argument(
        "--cost-per-object-us",
        type=float,
        help="override the profile's calibrated residual per fetched object, microseconds "
        "(default: the profile's, docs/simfs.md)",
    )
    p.add_argument(
        "--cost-per-mib-us",
        type=float,
        help="override the profile's calibrated residual per fetched MiB, microseconds "
        "(default: the profile's)",
    )
    p.add_argument(
        "--proxy", help="HTTP proxy URL between client and server, e.g. squid (default: DIRECT)"
    )
    p.add_argument(
        "--log",
        help="event file of every FUSE request and fetch, written at unmount (default: none)",
    )
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
        timeout_direct_s=args.timeout_direct,
        retries=args.retries,
        log=Path(args.log) if args.log else None,
        proxy=args.proxy,
        client_profile=args.client_profile,
        cost_per_object_us=args.cost_per_object_us,
        cost_per_mib_us=args.cost_per_mib_us,
        prefetch_filebundles=args.prefetch_filebundles,
        bundle_pool_size=args.bundle_pool_size,
    )
    opts.validate()
    return opts


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    mount = SimMount(args.url, args.mountpoint, opts, progress=_say)
    mount.check()  # every path argument, before anything is started
    done = f"mounted {mount.url} on {mount.path} (client profile {opts.client_profile})"
    if args.foreground or args.ready_fd is not None:
        return serve_foreground(mount, args.ready_fd, lambda: print(done))
    if opts.netem:
        # The network emulator lives in a Python process: keep one running with the mount.
        tail = [a for a in sys.argv[sys.argv.index("mount") + 1 :] if a != "--foreground"]
        if not tail:
            raise UsageError("sim mount: cannot re-run the command line in the background")
        spawn_detached_wrapper(tail, mount)
    else:
        mount.start(detach=True)
    print(done)
    return 0
