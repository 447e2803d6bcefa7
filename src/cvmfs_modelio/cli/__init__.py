"""The ``cvmfs-modelio`` command: one subcommand per job.

Each subcommand lives in ``cvmfs_modelio.cli.<name>`` and exposes
``register(subparsers)``; adding a job is adding a module there (they are discovered).
Bad input (UsageError) becomes one line on stderr and exit status 2; a run that cannot be
what it claims (MeasurementError, e.g. a cold run with pages left) one line and status 1.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from cvmfs_modelio import __version__
from cvmfs_modelio.core.errors import UsageError

PROG = "cvmfs-modelio"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message}\n")
        raise SystemExit(2)


@functools.cache
def command_modules(package: str, prefix: str = "") -> tuple[str, ...]:
    """Names of the modules of ``package`` whose name starts with ``prefix``, sorted.

    Cached: the package directory is listed once per process, so a caller that later drops
    privileges (tests of permission errors run as nobody) still builds the same parser.
    """
    pkg = importlib.import_module(package)
    return tuple(
        sorted(
            f"{package}.{m.name}"
            for m in pkgutil.iter_modules(pkg.__path__)
            if m.name.startswith(prefix) and not m.name.startswith("_")
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in command_modules("cvmfs_modelio.cli"):
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return e.exit_status
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 141
    return rc
