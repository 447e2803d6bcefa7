"""The errors the command line turns into one line on stderr and an exit status."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input: a file that cannot be measured, a parameter out of range.

    The message is complete on its own (it names the file or the parameter and the
    problem); the CLI prints ``cvmfs-modelio: <message>`` and exits with ``exit_status`` (2).
    """

    exit_status = 2


class MeasurementError(UsageError):
    """The run cannot be what it claims (a cold run whose file stays in the page cache).

    Raised instead of reporting a number that would measure the wrong thing; the CLI
    prints the one-line message and exits with status 1.
    """

    exit_status = 1


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (``signum``): unwind, cleaning up as for Ctrl-C.

    A KeyboardInterrupt, so ``except Exception`` never swallows it and ``subprocess.run``
    kills its child on the way out; the CLI exits with 128 + ``signum`` (130, 143).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signum).name


def os_error(path: object, e: OSError, doing: str = "read") -> UsageError:
    """The one wording of a path that cannot be used, for every command.

    ``PATH: no such file or directory``, ``PATH: permission denied``, ``PATH: is a
    directory``, ``PATH: not a directory``, else ``PATH: cannot <doing>: <reason>``.
    """
    import os

    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    return UsageError(f"{name}: {os_reason(e, doing)}")


def os_reason(e: OSError, doing: str = "read") -> str:
    """The reason part of :func:`os_error`'s message."""
    if isinstance(e, FileNotFoundError):
        return NO_SUCH_FILE
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, NotADirectoryError):
        return "not a directory"
    return f"cannot {doing}: {(e.strerror or str(e)).lower()}"


NO_SUCH_FILE = "no such file or directory"
