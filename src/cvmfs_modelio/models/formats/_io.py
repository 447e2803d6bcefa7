"""What every format reader needs: a read-only map of the file and checked little-endian reads."""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError


class FormatError(Exception):
    """The bytes break the format's rules; the reader adds the user's file to the message."""


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The whole file, read-only and mapped (``b""`` when empty); pages load only when read."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below, after the error check
    except OSError as e:
        raise UsageError(f"{path}: cannot open: {e.strerror or e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            yield m


class Cursor:
    """Little-endian reads from a buffer that never go past ``end`` (FormatError instead)."""

    def __init__(self, buf: bytes | mmap.mmap, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.end - self.pos:
            raise FormatError(
                f"{what} at byte {self.pos} needs {n} bytes, {self.end - self.pos} remain"
            )

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def _unpack(self, fmt: str, what: str) -> int:
        n = struct.calcsize(fmt)
        v: int = struct.unpack(fmt, self.take(n, what))[0]
        return v

    def u8(self, what: str) -> int:
        return self._unpack("<B", what)

    def u32(self, what: str) -> int:
        return self._unpack("<I", what)

    def i32(self, what: str) -> int:
        return self._unpack("<i", what)

    def u64(self, what: str) -> int:
        return self._unpack("<Q", what)

    def i64(self, what: str) -> int:
        return self._unpack("<q", what)


def checked_numel(shape: tuple[int, ...], what: str, limit: int = 1 << 62) -> int:
    """Number of elements, refusing negative dimensions and products beyond ``limit``."""
    n = 1
    for d in shape:
        if d < 0:
            raise FormatError(f"{what}: negative dimension in shape {shape}")
        n *= d
        if n > limit:
            raise FormatError(f"{what}: shape {shape} is impossibly large")
    return n
