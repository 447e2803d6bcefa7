"""The fuzz budget: one hypothesis profile for every target, and the seed that replays a run.

Each target names its own example count (``fuzz(n)``), chosen so that all of tests/fuzz
together stay under 2 minutes under CI on the 2-core machine; ``CMIO_FUZZ_SCALE`` multiplies
every count (e.g. ``CMIO_FUZZ_SCALE=20`` for a long local run).  The seed is random per run
unless ``CMIO_FUZZ_SEED`` fixes it; a failing target prints the command that replays it
(tests/fuzz/conftest.py), and hypothesis shrinks the failure to a minimal example.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, seed, settings

SEED = int(os.environ.get("CMIO_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
SCALE = float(os.environ.get("CMIO_FUZZ_SCALE") or 1)
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

F = TypeVar("F", bound=Callable[..., Any])


def fuzz(examples: int) -> Callable[[F], F]:
    """Decorate a @given test: ``examples`` cases (times CMIO_FUZZ_SCALE), the run's seed.

    No deadline (the machine is shared: a slow example is not a failure; hangs are caught by
    socket and process timeouts inside the targets).  Under CI the example database is off,
    so a run depends on its seed alone."""
    extra: dict[str, Any] = {"database": None} if _IN_CI else {}

    def wrap(fn: F) -> F:
        fn = settings(
            max_examples=max(1, round(examples * SCALE)),
            deadline=None,
            print_blob=True,
            suppress_health_check=[
                HealthCheck.function_scoped_fixture,
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
            ],
            **extra,
        )(fn)
        return seed(SEED)(fn)

    return wrap
