"""The one clock of every trace (CLOCK_MONOTONIC) and the system clock some tools stamp."""

from __future__ import annotations

import time

CLOCK_SAMPLES = 25


def realtime_minus_monotonic(samples: int = CLOCK_SAMPLES) -> tuple[int, int]:
    """``(CLOCK_REALTIME - CLOCK_MONOTONIC, uncertainty)`` in ns.

    The tightest of ``samples`` realtime readings bracketed by two monotonic ones; the
    uncertainty is half that bracket (well under a microsecond on an idle CPU).  A system-
    clock instant ``r`` is the monotonic instant ``r - offset`` while the clock is not stepped.
    """
    best: tuple[int, int] | None = None
    for _ in range(max(1, samples)):
        m0 = time.monotonic_ns()
        r = time.time_ns()
        m1 = time.monotonic_ns()
        half = (m1 - m0 + 1) // 2
        if best is None or half < best[1]:
            best = (r - (m0 + m1) // 2, half)
    assert best is not None
    return best
