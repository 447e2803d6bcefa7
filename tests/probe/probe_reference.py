"""An independent Python model of the probe's patterns and of its verify pattern.

Written from the pattern definitions (docs/probe.md), not from the C++: the tests
compare the native plans against these.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def sequential(size: int, block: int, stride: int) -> list[tuple[int, int]]:
    return [(off, min(block, size - off)) for off in range(0, size, stride)]


def random_ops(size: int, block: int, align: int, count: int, seed: int) -> list[tuple[int, int]]:
    slots = (size - block) // align + 1
    state = seed
    out = []
    for _ in range(count):
        state = (state + GOLDEN) & MASK
        out.append((((mix(state) * slots) >> 64) * align, block))
    return out


def reference_plan(
    pattern: str,
    size: int,
    *,
    block: int,
    stride: int = 0,
    count: int = 0,
    align: int = 0,
    seed: int = 0,
    ranges: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    if pattern in ("seq", "mmap-seq"):
        return sequential(size, block, block)
    if pattern == "reverse":
        return sequential(size, block, block)[::-1]
    if pattern == "stride":
        return sequential(size, block, stride)
    if pattern in ("rand", "mmap-rand"):
        return random_ops(size, block, align, count, seed)
    if pattern in ("replay", "mmap-list"):
        assert ranges is not None
        return list(ranges)
    raise ValueError(pattern)


def pattern_bytes(offset: int, n: int) -> bytes:
    """Bytes [offset, offset+n) of the verify pattern: little-endian words mix(k)."""
    first, last = offset >> 3, (offset + n + 7) >> 3
    k = np.arange(first, last, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = k.copy()
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    raw = z.astype("<u8").tobytes()
    start = offset - (first << 3)
    return raw[start : start + n]


def write_synced(path: Path, data: bytes) -> Path:
    """Write ``data`` and fsync it, so the page cache holds no dirty pages (cold works)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def write_pattern_file(path: Path, size: int) -> Path:
    return write_synced(path, pattern_bytes(0, size))
