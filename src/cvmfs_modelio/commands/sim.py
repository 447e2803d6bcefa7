"""``cvmfs-modelio sim ...``: the emulated CVMFS stack.

Each ``sim`` verb lives in ``cvmfs_modelio.sim.cli_<verb>`` with ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

SIM_COMMANDS: tuple[str, ...] = ("publish", "serve", "mount", "umount", "wipe_cache")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("sim", help="emulated CVMFS: publish, serve, mount")
    verbs = p.add_subparsers(dest="sim_command", metavar="VERB", parser_class=type(p))
    verbs.required = True
    for name in SIM_COMMANDS:
        importlib.import_module(f"cvmfs_modelio.sim.cli_{name}").register(verbs)
