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
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

from cvmfs_modelio import __version__
from cvmfs_modelio.core.errors import Interrupted, UsageError

PROG = "cvmfs-modelio"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if (
            action.option_strings
            and "default" not in text
            # identity, not ==: a default of 0 or 1 is shown (0 == False, 1 == True)
            and not any(d is x for x in (None, False, True, argparse.SUPPRESS))
            and d != []
        ):
            text += " (default %(default)s)"
        return text


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line naming the option (no usage dump)
    and exit status 2; help shows every option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # "argument --block: ..." -> "--block: ...", as UsageError messages name options.
        if message.startswith("argument "):
            message = message[len("argument ") :]
        sys.stderr.write(f"{PROG}: {message}\n")
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
    parser = OneLineParser(
        prog=PROG,
        description="Storage-layer benchmark and advisor for ML model files on CernVM-FS: "
        "one subcommand per job (COMMAND --help for its options).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    only = _only_module(argv) if argv is not None else None
    for name in (only,) if only else command_modules("cvmfs_modelio.cli"):
        importlib.import_module(name).register(sub)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Later signals are ignored: the unwinding (unmount, stop children, remove temporary
    # directories, write the partial result) must run to its end.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad option (2, its one line already printed)
        return e.code if isinstance(e.code, int) else 2
    # SIGTERM unwinds like Ctrl-C (commands that serve until a signal install their own).
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc: int = args.func(args)
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return e.exit_status
    except Interrupted as e:
        sys.stderr.write(f"{PROG}: interrupted by {e.name}\n")
        return 128 + e.signum
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 141
    except OSError as e:
        # A path the command could not use and did not check itself: still one line.
        if e.filename is None:
            raise
        why = (e.strerror or str(e)).lower()
        sys.stderr.write(f"{PROG}: {e.filename}: {why}\n")
        return 2
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return rc
