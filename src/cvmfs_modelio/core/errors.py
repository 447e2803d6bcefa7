"""The one error type that the command line turns into a one-line message and exit status 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input: a file that cannot be measured, a parameter out of range.

    The message is complete on its own (it names the file or the parameter and the
    problem); the CLI prints ``cvmfs-modelio: <message>`` and exits with status 2.
    """
