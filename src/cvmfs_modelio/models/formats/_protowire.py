"""A bounds-checked walker over protobuf wire format, for readers that need byte offsets.

Protobuf libraries parse into objects and forget where each field was; a tensor map needs the
offset of every ``raw_data`` / ``tensor_content`` payload in the file.  Walking the wire format
gives that without copying a payload: a length-delimited field is returned as the ``(start,
end)`` of its bytes, checked against the enclosing message before anything else happens.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import NamedTuple, TypeAlias

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_DEPTH = 64


Buffer: TypeAlias = "bytes | mmap.mmap"


class WireError(Exception):
    """The bytes are not well-formed protobuf (message says where and why)."""


class Field(NamedTuple):
    number: int
    wire_type: int
    value: int  # VARINT: the value; I32/I64/LEN: the payload's start offset
    end: int  # offset just past the payload (VARINT: past the varint)


def read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint at ``pos`` (not past ``end``); returns (value, next position)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(f"varint runs past the end of its message at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def fields(buf: Buffer, start: int, end: int) -> Iterator[Field]:
    """The fields of the message occupying ``buf[start:end]``, in file order."""
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        number, wt = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        if wt == VARINT:
            v, pos = read_varint(buf, pos, end)
            yield Field(number, wt, v, pos)
        elif wt == LEN:
            n, p = read_varint(buf, pos, end)
            if n > end - p:
                raise WireError(
                    f"field {number} at byte {p} claims {n} bytes, only {end - p} remain"
                )
            yield Field(number, wt, p, p + n)
            pos = p + n
        elif wt == I32:
            if pos + 4 > end:
                raise WireError(f"fixed32 field {number} runs past the end at byte {pos}")
            yield Field(number, wt, pos, pos + 4)
            pos += 4
        elif wt == I64:
            if pos + 8 > end:
                raise WireError(f"fixed64 field {number} runs past the end at byte {pos}")
            yield Field(number, wt, pos, pos + 8)
            pos += 8
        else:
            raise WireError(f"unsupported wire type {wt} (field {number}) at byte {pos}")


def packed_varints(buf: Buffer, f: Field, limit: int = 1 << 16) -> list[int]:
    """A repeated varint field: a packed LEN payload or a single VARINT; at most ``limit``."""
    if f.wire_type == VARINT:
        return [f.value]
    if f.wire_type != LEN:
        raise WireError(f"field {f.number}: expected varints, got wire type {f.wire_type}")
    out = []
    pos = f.value
    while pos < f.end:
        v, pos = read_varint(buf, pos, f.end)
        out.append(v)
        if len(out) > limit:
            raise WireError(f"field {f.number}: more than {limit} values")
    return out


def text(buf: Buffer, f: Field, limit: int = 1 << 20) -> str:
    """A string field (UTF-8, replacement characters for bad bytes), at most ``limit`` bytes."""
    if f.wire_type != LEN:
        raise WireError(f"field {f.number}: expected a string, got wire type {f.wire_type}")
    if f.end - f.value > limit:
        raise WireError(f"field {f.number}: string of {f.end - f.value} bytes")
    raw = bytes(buf[f.value : f.end])
    return raw.decode("utf-8", errors="replace")


def signed64(v: int) -> int:
    """Two's-complement reading of a varint-encoded int64."""
    return v - (1 << 64) if v >= 1 << 63 else v
