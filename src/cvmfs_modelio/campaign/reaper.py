"""A run's scratch directory is cleaned up even when the run is killed with SIGKILL.

:class:`Guardian` starts ``python -m cvmfs_modelio.campaign.reaper WORKDIR`` in a session
of its own (a Ctrl-C on the terminal does not reach it) with a pipe from the run.  A run
that ends normally writes ``done`` and closes the pipe; a run that dies closes it without
a word, and the guardian then unmounts every mount below WORKDIR (the emulated clients are
asked to stop through their ``user.pid``; a dead client's mount is detached) and removes
WORKDIR.  Loader children die with the run (``PR_SET_PDEATHSIG``), the WAN emulator child
when its stdin closes, the HTTP server with the run's own threads.

:func:`cleanup_workdir` is the same cleanup, also called by the next run for a previous
run whose guardian did not survive either.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

DONE = b"done\n"
MARKER = ".cvmfs-modelio-run"  # only directories carrying it are ever removed


def mounts_below(workdir: Path) -> list[str]:
    """Mount points at or below ``workdir``, deepest first."""
    from cvmfs_modelio.sim.mount import mounts

    root = os.path.realpath(workdir).rstrip("/") + "/"
    found = [mp for mp, _t, _s in mounts() if (mp + "/").startswith(root)]
    return sorted(set(found), key=lambda p: -p.count("/"))


def cleanup_workdir(workdir: str | os.PathLike[str]) -> bool:
    """Unmount everything below ``workdir`` and remove it; False if it is not a run's.

    Refuses (returns False) a directory without the run marker, so a damaged lock file
    can never make it remove anything else.
    """
    from cvmfs_modelio.core.errors import UsageError
    from cvmfs_modelio.sim.mount import FSTYPE, _lazy_unmount, mount_type, umount

    wd = Path(workdir)
    if not (wd / MARKER).is_file():
        return False
    for mp in mounts_below(wd):
        try:
            if mount_type(mp) == FSTYPE:
                umount(mp)
            else:
                _lazy_unmount(mp)
        except UsageError:
            with contextlib.suppress(UsageError):
                _lazy_unmount(mp)
    shutil.rmtree(wd, ignore_errors=True)
    return True


def make_workdir(parent: str | os.PathLike[str] | None) -> Path:
    """A fresh scratch directory for one run, marked as such."""
    import tempfile

    wd = Path(tempfile.mkdtemp(prefix="cvmfs-modelio-run-", dir=parent)).resolve()
    (wd / MARKER).write_text(f"{os.getpid()}\n")
    return wd


class Guardian:
    """The watcher process of one run's ``workdir`` (see the module docstring)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cvmfs_modelio.campaign.reaper", str(workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    def release(self) -> None:
        """The run ended normally (it cleans up itself): let the guardian go."""
        stdin = self.proc.stdin
        if stdin is not None:
            try:
                stdin.write(DONE)
                stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m cvmfs_modelio.campaign.reaper WORKDIR\n")
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    got = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        got += chunk
    if got.startswith(DONE):
        return 0
    cleanup_workdir(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
