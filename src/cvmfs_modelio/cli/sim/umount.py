"""``cvmfs-modelio sim umount MOUNTPOINT``: unmount an emulated CVMFS mount (also a stale one)."""

from __future__ import annotations

import argparse
from typing import Any

from cvmfs_modelio.sim.mount import umount


def register(verbs: argparse._SubParsersAction[Any]) -> None:
    p = verbs.add_parser(
        "umount",
        help="unmount an emulated CVMFS mount",
        description="Stop the client of MOUNTPOINT and unmount it; a mount left behind by a "
        "killed client ('Transport endpoint is not connected') is detached.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    umount(args.mountpoint)
    print(f"unmounted {args.mountpoint}")
    return 0
