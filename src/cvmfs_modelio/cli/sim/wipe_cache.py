"""``cvmfs-modelio sim wipe-cache DIR``: empty an emulated client's cache directory."""

from __future__ import annotations

import argparse
from typing import Any

from cvmfs_modelio.sim.mount import default_cache_dir, wipe_cache


def register(verbs: argparse._SubParsersAction[Any]) -> None:
    p = verbs.add_parser(
        "wipe-cache",
        help="remove every object from an emulated client's cache",
        description="Remove every cached object under DIR (a cmio-simfs cache directory).",
    )
    p.add_argument("cache", metavar="DIR", nargs="?", help=f"default {default_cache_dir()}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    n = wipe_cache(args.cache or default_cache_dir())
    print(f"removed {n} cached objects")
    return 0
