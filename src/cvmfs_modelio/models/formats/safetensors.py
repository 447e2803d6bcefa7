"""safetensors: an 8-byte little-endian header length, a JSON header, then the tensor bytes.

Offsets in the header (``data_offsets``) are relative to the end of the header; the spec
requires them to tile the data section without gaps or overlaps, which is checked (a hostile
header could otherwise point two tensors at the same bytes or past the file).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats._io import FormatError, checked_numel
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map

FORMAT = "safetensors"
MAX_HEADER = 100 << 20  # the reference implementation's limit

# safetensors dtype -> (numpy-style name, bits)
DTYPES = {
    "BOOL": ("bool", 8),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "U16": ("uint16", 16),
    "I16": ("int16", 16),
    "U32": ("uint32", 32),
    "I32": ("int32", 32),
    "U64": ("uint64", 64),
    "I64": ("int64", 64),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "F32": ("float32", 32),
    "F64": ("float64", 64),
    "C64": ("complex64", 64),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E8M0": ("float8_e8m0", 8),
    "F4": ("float4_e2m1", 4),
    "F6_E2M3": ("float6_e2m3", 6),
    "F6_E3M2": ("float6_e3m2", 6),
}


def parse_header(path: Path) -> tuple[int, dict[str, Any]]:
    """``(data_start, header)`` of the safetensors file at ``path``; FormatError if malformed."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise FormatError(f"{size}-byte file is shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise FormatError(f"header length {n} is larger than the file ({size} bytes)")
        if n > MAX_HEADER:
            raise FormatError(f"header length {n} exceeds the {MAX_HEADER}-byte limit")
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"header is not JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    return 8 + n, header


def read(path: Path) -> ModelMap:
    shown = os.fspath(path)
    try:
        data_start, header = parse_header(path)
        size = os.stat(path).st_size
        spans, notes = _spans(header, os.path.abspath(shown), data_start, size)
    except FormatError as e:
        raise UsageError(f"{shown}: not a valid safetensors file: {e}") from None
    return build_map(FORMAT, shown, [shown], spans, notes=notes)


def _spans(
    header: dict[str, Any], file: str, data_start: int, size: int
) -> tuple[list[TensorSpan], list[str]]:
    spans = []
    notes = []
    meta = header.get("__metadata__")
    if meta is not None and not isinstance(meta, dict):
        raise FormatError("__metadata__ is not an object")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise FormatError(f"tensor {name!r}: entry is not an object")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise FormatError(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(type(d) is int for d in shape)):
            raise FormatError(f"tensor {name!r}: shape {shape!r} is not a list of integers")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)):
            raise FormatError(f"tensor {name!r}: data_offsets {offs!r} is not [begin, end]")
        begin, end = offs
        if not 0 <= begin <= end or data_start + end > size:
            raise FormatError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] lie outside the "
                f"{size - data_start}-byte data section"
            )
        np_name, bits = DTYPES[dtype]
        numel = checked_numel(tuple(shape), f"tensor {name!r}")
        if (numel * bits + 7) // 8 != end - begin:
            raise FormatError(
                f"tensor {name!r}: {end - begin} bytes for {dtype} shape {shape} "
                f"(needs {(numel * bits + 7) // 8})"
            )
        spans.append(TensorSpan(name, np_name, tuple(shape), file, data_start + begin, end - begin))
    spans.sort(key=lambda t: t.offset_bytes)
    pos = data_start
    for t in spans:
        if t.length_bytes == 0:
            continue
        if t.offset_bytes < pos:
            raise FormatError(f"tensor {t.name!r} overlaps the tensor before it")
        if t.offset_bytes > pos:
            notes.append(f"{t.offset_bytes - pos} bytes of gap before tensor {t.name!r}")
        pos = t.end_bytes
    if pos < size:
        notes.append(f"{size - pos} bytes after the last tensor")
    return spans, notes
