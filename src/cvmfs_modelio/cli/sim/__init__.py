"""``cvmfs-modelio sim ...``: the emulated CVMFS stack.

Each ``sim`` verb lives in ``cvmfs_modelio.cli.sim.<verb>`` with ``register(subparsers)``
(discovered, like the top-level commands).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from cvmfs_modelio.cli import command_modules


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("sim", help="emulated CVMFS: publish, serve, mount")
    verbs = p.add_subparsers(dest="sim_command", metavar="VERB", parser_class=type(p))
    verbs.required = True
    for name in command_modules("cvmfs_modelio.cli.sim"):
        importlib.import_module(name).register(verbs)
