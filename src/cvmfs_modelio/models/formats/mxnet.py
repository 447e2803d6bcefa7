"""MXNet ``.params`` (``mx.nd.save`` / ``Module.save_params``): a list of NDArrays, then names.

Layout (MXNet's ``NDArray::Save``): ``u64 0x112``, ``u64 0``, ``u64 count``, per array a
magic (V2 ``0xF993FAC9``, V3 ``0xF993FACA``), storage type, shape (``u32 ndim`` + ``i64``
dims), context (two ``i32``), type flag (``i32``) and the raw little-endian data; then
``u64 count`` names, each ``u64 length`` + bytes (``arg:`` / ``aux:`` prefixes kept).
Sparse arrays and the pre-V2 layout are refused with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats._io import Cursor, FormatError, checked_numel, mapped
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map

FORMAT = "mxnet-params"
LIST_MAGIC = 0x112
V2, V3 = 0xF993FAC9, 0xF993FACA
DTYPES = {
    0: ("float32", 4),
    1: ("float64", 8),
    2: ("float16", 2),
    3: ("uint8", 1),
    4: ("int32", 4),
    5: ("int8", 1),
    6: ("int64", 8),
    7: ("bool", 1),
    8: ("int16", 2),
    9: ("uint16", 2),
    10: ("uint32", 4),
    11: ("uint64", 8),
    12: ("bfloat16", 2),
}


def read(path: Path) -> ModelMap:
    shown = os.fspath(path)
    with mapped(path) as buf:
        try:
            spans = _parse(buf, os.path.abspath(shown))
        except FormatError as e:
            raise UsageError(f"{shown}: not a valid MXNet params file: {e}") from None
    return build_map(FORMAT, shown, [shown], spans)


def _parse(buf: Any, file: str) -> list[TensorSpan]:
    c = Cursor(buf)
    if c.u64("magic") != LIST_MAGIC:
        raise FormatError("no NDArray list magic 0x112")
    c.u64("reserved")
    n = c.u64("array count")
    c.need(n * 24, "arrays")  # magic, storage type, ndim, context, type flag at least
    arrays: list[tuple[str, tuple[int, ...], int, int]] = []
    for i in range(n):
        magic = c.u32(f"array {i} magic")
        if magic not in (V2, V3):
            raise FormatError(f"array {i}: magic {magic:#x} (only the V2/V3 layouts are read)")
        stype = c.i32(f"array {i} storage type")
        if stype != 0:
            raise FormatError(f"array {i}: sparse storage type {stype} is not supported")
        ndim = c.u32(f"array {i} ndim")
        if ndim == 0xFFFFFFFF or ndim > 32:  # -1: unknown shape (V3), nothing stored
            raise FormatError(f"array {i}: bad dimension count {ndim}")
        shape = tuple(c.i64(f"array {i} dimension") for _ in range(ndim))
        if ndim == 0:
            arrays.append(("", (), 0, 0))
            continue
        c.i32(f"array {i} device type")
        c.i32(f"array {i} device id")
        flag = c.i32(f"array {i} type flag")
        if flag not in DTYPES:
            raise FormatError(f"array {i}: unknown type flag {flag}")
        dtype, size = DTYPES[flag]
        length = checked_numel(shape, f"array {i}") * size
        c.need(length, f"array {i} data")
        arrays.append((dtype, shape, c.pos, length))
        c.pos += length
    n_names = c.u64("name count")
    if n_names not in (0, n):
        raise FormatError(f"{n_names} names for {n} arrays")
    c.need(n_names * 8, "names")
    names = [
        c.take(c.u64(f"name {i} length"), f"name {i}").decode("utf-8", errors="replace")
        for i in range(n_names)
    ]
    if not names:
        names = [f"[{i}]" for i in range(n)]
    return [
        TensorSpan(name, dtype, shape, file, off, length)
        for name, (dtype, shape, off, length) in zip(names, arrays, strict=True)
        if dtype
    ]
