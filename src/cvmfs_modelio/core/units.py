"""Human units on the command line and in tables; bytes and nanoseconds everywhere else."""

from __future__ import annotations

import re

from cvmfs_modelio.core.errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_POW = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
# Accepted suffixes (any case): none or B (bytes), K/M/G/T/P and KiB/MiB/... (powers of
# 1024, as fio and CVMFS mean them).  KB/MB/GB are refused: half the world reads them as
# 10^3/10^6, the other half as 1024/2^20, and a benchmark must not guess.
_BINARY = re.compile(r"^(?:([kmgtp])(?:ib?)?|b?)$", re.IGNORECASE)
_DECIMAL = re.compile(r"^[kmgtp]b$", re.IGNORECASE)

SIZE_HELP = "bytes; K/M/G or KiB/MiB/GiB = 2^10/2^20/2^30; MB is refused"
BANDWIDTH_HELP = "bytes/s, e.g. 100MiB or 100MiB/s; 0: unlimited"


def parse_size(text: str, what: str = "size") -> int:
    """Parse ``4KiB``, ``4K``, ``4M``, ``4MiB``, ``4194304``, ``4096B`` into bytes.

    ``K``, ``M``, ``G``, ... and ``KiB``, ``MiB``, ``GiB``, ... are powers of 1024 (as fio
    and CVMFS use them); ``4MB`` is refused, since it means 4 * 10^6 to some and 4 MiB to
    others.  Raises UsageError naming ``what`` (the option) on anything else.
    """
    m = _SIZE_RE.match(text)
    if m is None:
        raise UsageError(f"{what}: cannot parse size {text!r} (use e.g. 4KiB, 4M, 4194304)")
    number, suffix = m.groups()
    if _DECIMAL.match(suffix):
        raise UsageError(
            f"{what}: {text!r} is ambiguous (10^{3 * _POW[suffix[0].lower()]} or "
            f"2^{10 * _POW[suffix[0].lower()]}?): write {number}{suffix[0].upper()}iB "
            "for powers of 1024, or the number of bytes"
        )
    b = _BINARY.match(suffix)
    if b is None:
        raise UsageError(f"{what}: cannot parse size {text!r} (use e.g. 4KiB, 4M, 4194304)")
    prefix = (b.group(1) or "").lower()
    value = float(number) * (1024 ** _POW[prefix])
    if value >= 2**63:
        raise UsageError(f"{what}: size {text!r} is too large")
    if value != int(value):
        raise UsageError(f"{what}: size {text!r} is not a whole number of bytes")
    return int(value)


def parse_bandwidth(text: str, what: str = "bandwidth") -> int:
    """Parse a bandwidth in bytes per second: ``100MiB``, ``100MiB/s``, ``100M``, ``0``.

    The size part is :func:`parse_size`'s (so ``MB`` is refused); a trailing ``/s`` is
    optional.  0 means unlimited.  Raises UsageError naming ``what`` on anything else.
    """
    body = text.strip()
    if body.lower().endswith("/s"):
        body = body[:-2]
    if "/" in body:
        raise UsageError(f"{what}: cannot parse bandwidth {text!r} (use e.g. 100MiB or 100MiB/s)")
    try:
        return parse_size(body, what)
    except UsageError as e:
        if "cannot parse size" in str(e):
            raise UsageError(
                f"{what}: cannot parse bandwidth {text!r} (use e.g. 100MiB or 100MiB/s)"
            ) from None
        raise


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
