"""Server-side fault injection rules for the builtin HTTP server (used by the fault tests)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from cvmfs_modelio.core.errors import UsageError

# Codes recorded in the request log's ``aux`` field (0: no fault).
FAULT_CODES = {
    "404": 1,
    "500": 2,
    "slow": 3,
    "reset": 4,
    "truncate": 5,
    "corrupt": 6,
    "long": 7,
    "short": 8,
    "endless": 9,
    "other": 10,
    "silent": 11,
}
MAX_DELAY_S = 3600.0


@dataclass(frozen=True)
class FaultRule:
    """Inject a fault into requests whose path matches ``match`` (a regex, ``re.search``).

    kind:
      ``404`` / ``500``  answer with that status instead of the object;
      ``slow``           wait ``delay_s`` seconds before answering normally (interrupted at
                         shutdown);
      ``reset``          send the headers, then close with a TCP RST (SO_LINGER 0);
      ``truncate``       send the headers with the full Content-Length, then half the body,
                         then close;
      ``corrupt``        send the full body with bytes flipped (first, middle and last byte);
      ``long``           announce a Content-Length 4 KiB longer than the body, send the body,
                         then keep the connection open and silent (the client waits for
                         bytes that never come);
      ``short``          announce half the body's length but send the whole body (the rest
                         stays in a kept-alive connection, where the next answer is read);
      ``endless``        no Content-Length (read until close) and a body without end: the
                         object's first two bytes (its zlib header), then empty deflate
                         blocks forever (a stream that never ends and inflates to nothing);
      ``other``          answer 200 with a different, valid object of the store (the first
                         other one, in name order, with the same suffix);
      ``silent``         read the request, then answer nothing, keeping the connection open
                         until the client closes it (or the server stops).
    times: fire for the first ``times`` matching requests only (None: always).
    """

    match: str
    kind: str
    times: int | None = None
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_CODES:
            raise UsageError(f"fault kind {self.kind!r} is not one of {', '.join(FAULT_CODES)}")
        try:
            re.compile(self.match)
        except re.error as e:
            raise UsageError(f"fault match {self.match!r} is not a regex: {e}") from None
        if self.times is not None and self.times < 0:
            raise UsageError(f"fault times {self.times} is negative")
        if not 0 <= self.delay_s <= MAX_DELAY_S:
            raise UsageError(f"fault delay {self.delay_s} s is outside 0..{MAX_DELAY_S:.0f}")

    @property
    def code(self) -> int:
        return FAULT_CODES[self.kind]


@dataclass
class _Armed:
    rule: FaultRule
    regex: re.Pattern[str]
    left: int | None
    fired: int = 0


@dataclass
class FaultSet:
    """The active rules; the first matching rule with shots left fires (thread-safe)."""

    _rules: list[_Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, rules: Iterable[FaultRule]) -> None:
        """Replace the rules (their ``times`` counters start afresh)."""
        armed = [_Armed(r, re.compile(r.match), r.times) for r in rules]
        with self._lock:
            self._rules = armed

    def pick(self, path: str) -> FaultRule | None:
        """The fault to inject into a request for ``path``, or None."""
        if not self._rules:  # the common case, without taking the lock
            return None
        with self._lock:
            for a in self._rules:
                if (a.left is None or a.left > 0) and a.regex.search(path):
                    if a.left is not None:
                        a.left -= 1
                    a.fired += 1
                    return a.rule
        return None

    def fired(self) -> list[int]:
        """How often each rule fired, in rule order."""
        with self._lock:
            return [a.fired for a in self._rules]


def parse_fault(spec: str) -> FaultRule:
    """``KIND:REGEX[:TIMES[:DELAY_S]]`` (command-line form), e.g. ``500:P$:2``."""
    parts = spec.split(":")
    if len(parts) < 2 or len(parts) > 4:
        raise UsageError(f"--fault {spec!r}: use KIND:REGEX[:TIMES[:DELAY_S]]")
    try:
        times = int(parts[2]) if len(parts) > 2 and parts[2] else None
        delay = float(parts[3]) if len(parts) > 3 else 0.0
    except ValueError:
        raise UsageError(f"--fault {spec!r}: TIMES and DELAY_S must be numbers") from None
    return FaultRule(match=parts[1], kind=parts[0], times=times, delay_s=delay)
