"""The ``cvmfs-modelio`` command: one subcommand per job.

Each subcommand lives in ``cvmfs_modelio.cli.<name>`` and exposes
``register(subparsers)``; adding a job is adding a module there (they are discovered).
Bad input (UsageError) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
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

    Listed with ``os.scandir`` rather than ``pkgutil.iter_modules`` (which imports
    ``inspect``: 6 ms of every command's start-up).  Cached: the package directory is listed
    once per process, so a caller that later drops privileges (tests of permission errors
    run as nobody) still builds the same parser.
    """
    pkg = importlib.import_module(package)
    names = set()
    for d in pkg.__path__:
        with os.scandir(d) as it:
            for e in it:
                if e.is_file() and e.name.endswith(".py"):
                    names.add(e.name[:-3])
                elif e.is_dir() and os.path.isfile(os.path.join(e.path, "__init__.py")):
                    names.add(e.name)
    return tuple(
        sorted(
            f"{package}.{m}"
            for m in names
            if m.startswith(prefix) and not m.startswith("_") and m.isidentifier()
        )
    )


def _only_module(argv: Sequence[str] | None) -> str | None:
    """The one command module ``argv`` needs, or None when all are needed (``--help``...).

    Only the chosen command's module is imported, so a command starts without the imports
    of every other one (``trace`` runs in ~the interpreter's own start-up time)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        return None
    name = f"cvmfs_modelio.cli.{args[0].replace('-', '_')}"
    return name if name in command_modules("cvmfs_modelio.cli") else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line parser; with ``argv``, only the command it names is registered."""
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    only = _only_module(argv) if argv is not None else None
    for name in (only,) if only else command_modules("cvmfs_modelio.cli"):
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 141
    return rc
