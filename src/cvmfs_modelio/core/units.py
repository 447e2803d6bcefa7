"""Human units on the command line and in tables; bytes and nanoseconds everywhere else."""

from __future__ import annotations

import re

from cvmfs_modelio.core.errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_POW = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str, what: str = "size") -> int:
    """Parse ``4KiB``, ``4K``, ``4M``, ``4MiB``, ``4194304`` into bytes.

    Binary multiples are used for both ``4M`` and ``4MiB`` (as fio and CVMFS do);
    ``4MB`` is also 4 MiB.  Raises UsageError naming ``what`` on anything else.
    """
    m = _SIZE_RE.match(text)
    if m is None:
        raise UsageError(f"{what}: cannot parse size {text!r} (use e.g. 4KiB, 4M, 4194304)")
    number, prefix, _i, _b = m.groups()
    value = float(number) * (1024 ** _POW[prefix.lower()])
    if value >= 2**63:
        raise UsageError(f"{what}: size {text!r} is too large")
    if value != int(value):
        raise UsageError(f"{what}: size {text!r} is not a whole number of bytes")
    return int(value)


def fmt_bytes(n: float) -> str:
    """``1.5 MiB`` style."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    v = float(n)
    for u in units:
        if abs(v) < 1024 or u == units[-1]:
            return f"{v:.0f} {u}" if u == "B" else f"{v:.1f} {u}"
        v /= 1024
    raise AssertionError("unreachable")


def fmt_ns(ns: float) -> str:
    """``1.3 ms`` style for a duration in nanoseconds."""
    v = float(ns)
    if abs(v) < 1e3:
        return f"{v:.0f} ns"
    if abs(v) < 1e6:
        return f"{v / 1e3:.1f} µs"
    if abs(v) < 1e9:
        return f"{v / 1e6:.1f} ms"
    return f"{v / 1e9:.2f} s"


def fmt_rate(bytes_per_s: float) -> str:
    """``812.3 MiB/s`` style."""
    return fmt_bytes(bytes_per_s) + "/s"
