"""Progress of long jobs on stderr: a rich bar with ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO


def _hms(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class PlainProgress:
    """One line per step: ``[  3/24  12%  elapsed 0:00:41  ETA 0:04:10] what``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = 0
        self.done = 0
        self.t0 = time.monotonic()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def begin(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.monotonic()
        self.note(f"measuring {total} repetitions")

    def status(self, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        eta = "?" if self.done == 0 else _hms(elapsed / self.done * (self.total - self.done))
        pct = 100.0 * self.done / self.total if self.total else 0.0
        w = len(str(self.total))
        where = f"{self.done:{w}d}/{self.total} {pct:3.0f}%"
        self._write(f"[{where}  elapsed {_hms(elapsed)}  ETA {eta}] {text}")

    def advance(self) -> None:
        self.done += 1

    def note(self, text: str) -> None:
        self._write(text)

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


class RichProgress:
    """A rich progress bar (count, elapsed, ETA) with the current cell as its description."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self._p = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task: Any = None

    def __enter__(self) -> RichProgress:
        self._p.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._p.stop()

    def begin(self, total: int) -> None:
        self._task = self._p.add_task("starting", total=total)

    def status(self, text: str) -> None:
        if self._task is None:
            self._p.console.print(text)
            return
        # the bar, counts and times take ~45 columns; the description gets the rest
        room = max(20, self.console.width - 48)
        short = text if len(text) <= room else text[: room - 1] + "…"
        self._p.update(self._task, description=short)

    def advance(self) -> None:
        if self._task is not None:
            self._p.advance(self._task)

    def note(self, text: str) -> None:
        self._p.console.print(text, markup=False, highlight=False)


def progress_for(stream: TextIO | None = None) -> PlainProgress | RichProgress:
    """Rich on a terminal, plain lines when stderr is a file or a pipe."""
    s = stream or sys.stderr
    return RichProgress() if s.isatty() else PlainProgress(s)
