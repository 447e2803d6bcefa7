"""argparse ``type=`` converters: every command parses sizes, bandwidths, numbers, ports and
chunk specs through these, so ``--block 4MiB`` and ``--bandwidth 100MiB/s`` mean the same in
every command (``core.units``, ``chunks.layouts``).

A bad value is an ``argparse.ArgumentTypeError``: the parser prints one line naming the
option (``cvmfs-modelio: --block: ...``) and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError

_WHAT = "value"  # the parse_* functions prefix their messages with it; argparse names the option


class Converter:
    """A named converter: argparse shows ``__name__`` in its messages; ``kind`` tells the
    parser-walk test (tests/cli) which options take sizes, bandwidths, ..."""

    def __init__(self, kind: str, fn: Callable[[str], Any]) -> None:
        self.kind = kind
        self.__name__ = kind
        self._fn = fn

    def __call__(self, text: str) -> Any:
        try:
            return self._fn(text)
        except UsageError as e:
            msg = str(e)
            if msg.startswith(_WHAT + ": "):
                msg = msg[len(_WHAT) + 2 :]
            raise argparse.ArgumentTypeError(msg) from None


def size(minimum: int = 0) -> Converter:
    """Bytes: ``4KiB``, ``4M``, ``4194304`` (``core.units.parse_size``; ``MB`` refused)."""

    def parse(text: str) -> int:
        v = units.parse_size(text, _WHAT)
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is less than {minimum} bytes")
        return v

    return Converter("size", parse)


def bandwidth() -> Converter:
    """Bytes per second: ``100MiB``, ``100MiB/s``, ``0`` (unlimited)."""
    return Converter("bandwidth", lambda t: units.parse_bandwidth(t, _WHAT))


def number(
    kind: type[int] | type[float], minimum: float | None = None, maximum: float | None = None
) -> Converter:
    """A finite int or float within [minimum, maximum]."""

    def parse(text: str) -> int | float:
        try:
            v = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and v < minimum:
            raise argparse.ArgumentTypeError(f"{text} is less than {minimum:g}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"{text} is more than {maximum:g}")
        return v

    return Converter(kind.__name__, parse)


def port() -> Converter:
    """A TCP port, 0 (any free port) to 65535."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port") from None
        if not 0 <= v <= 65535:
            raise argparse.ArgumentTypeError(f"{v} is not a TCP port")
        return v

    return Converter("port", parse)


def chunk_spec() -> Converter:
    """A chunker (``chunks.layouts.parse_chunk_spec``): ``MIN/AVG/MAX`` (CVMFS xor32),
    ``fastcdc:MIN/AVG/MAX``, ``tensor-aware:MIN/AVG/MAX``, ``fixed:SIZE``, ``whole``."""
    from cvmfs_modelio.chunks.layouts import parse_chunk_spec

    return Converter("chunk spec", parse_chunk_spec)


def min_avg_max() -> Converter:
    """``MIN/AVG/MAX`` sizes, checked as CVMFS needs them."""
    from cvmfs_modelio.chunks.layouts import parse_min_avg_max

    return Converter("MIN/AVG/MAX", lambda t: parse_min_avg_max(t, _WHAT))


def comma_list(item: Converter) -> Converter:
    """A comma-separated list of ``item`` values (``0,10,25``; ``100MiB/s,10MiB/s``), each
    parsed by ``item`` exactly as a single value is; a tuple, in the order given."""

    def parse(text: str) -> tuple[Any, ...]:
        parts = [p.strip() for p in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"{text!r}: empty entry in the list")
        return tuple(item(p) for p in parts)

    return Converter(f"{item.kind} list", parse)
