"""GGUF (llama.cpp): header, key/value metadata, tensor infos, then an aligned data section.

Read from the specification (github.com/ggml-org/ggml, docs/gguf.md), versions 2 and 3.
Shapes are reported in numpy order (GGUF lists ``ne[0]``, the fastest-varying dimension,
first); quantized types are named as ggml names them (``q4_k``, ``q8_0``, ...), their length
from ggml's block size and bytes per block.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats._io import Cursor, FormatError, checked_numel, mapped
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map

FORMAT = "gguf"
DEFAULT_ALIGNMENT = 32

# ggml_type -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("float32", 1, 4),
    1: ("float16", 1, 2),
    2: ("q4_0", 32, 18),
    3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22),
    7: ("q5_1", 32, 24),
    8: ("q8_0", 32, 34),
    9: ("q8_1", 32, 40),
    10: ("q2_k", 256, 84),
    11: ("q3_k", 256, 110),
    12: ("q4_k", 256, 144),
    13: ("q5_k", 256, 176),
    14: ("q6_k", 256, 210),
    15: ("q8_k", 256, 292),
    16: ("iq2_xxs", 256, 66),
    17: ("iq2_xs", 256, 74),
    18: ("iq3_xxs", 256, 98),
    19: ("iq1_s", 256, 50),
    20: ("iq4_nl", 32, 18),
    21: ("iq3_s", 256, 110),
    22: ("iq2_s", 256, 82),
    23: ("iq4_xs", 256, 136),
    24: ("int8", 1, 1),
    25: ("int16", 1, 2),
    26: ("int32", 1, 4),
    27: ("int64", 1, 8),
    28: ("float64", 1, 8),
    29: ("iq1_m", 256, 56),
    30: ("bfloat16", 1, 2),
    34: ("tq1_0", 256, 54),
    35: ("tq2_0", 256, 66),
    39: ("mxfp4", 32, 17),
    40: ("nvfp4", 64, 36),
    41: ("q1_0", 128, 18),
}
# metadata value type -> size of a scalar (strings and arrays handled apart)
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def _string(c: Cursor, what: str) -> bytes:
    n = c.u64(f"{what} length")
    return c.take(n, what)


def _skip_value(c: Cursor, vtype: int, what: str, depth: int = 0) -> Any:
    """Skip (or return, for small scalars and strings) one metadata value."""
    if vtype in _SCALAR:
        raw = c.take(_SCALAR[vtype], what)
        return int.from_bytes(raw, "little") if vtype in (4, 10, 2, 0) else None
    if vtype == _STRING:
        return _string(c, what)
    if vtype == _ARRAY:
        if depth > 4:
            raise FormatError(f"{what}: arrays nested too deeply")
        etype = c.u32(f"{what} element type")
        n = c.u64(f"{what} element count")
        if etype in _SCALAR:
            c.need(n * _SCALAR[etype], what)
            c.pos += n * _SCALAR[etype]
        elif etype in (_STRING, _ARRAY):
            c.need(n * (8 if etype == _STRING else 12), what)  # each element at least that
            for _ in range(n):
                _skip_value(c, etype, what, depth + 1)
        else:
            raise FormatError(f"{what}: unknown array element type {etype}")
        return None
    raise FormatError(f"{what}: unknown value type {vtype}")


def read(path: Path) -> ModelMap:
    shown = os.fspath(path)
    file = os.path.abspath(shown)
    with mapped(path) as buf:
        try:
            spans, notes = _parse(buf, file)
        except FormatError as e:
            raise UsageError(f"{shown}: not a valid GGUF file: {e}") from None
    return build_map(FORMAT, shown, [shown], spans, notes=notes)


def _parse(buf: Any, file: str) -> tuple[list[TensorSpan], list[str]]:
    c = Cursor(buf)
    if c.take(4, "magic") != b"GGUF":
        raise FormatError("no GGUF magic")
    version = c.u32("version")
    if version not in (2, 3):
        raise FormatError(f"version {version} not supported (2 and 3 are)")
    n_tensors = c.u64("tensor count")
    n_kv = c.u64("metadata count")
    c.need(n_kv * 13, "metadata")  # key length (8) + type (4) + at least one byte
    alignment = DEFAULT_ALIGNMENT
    for i in range(n_kv):
        key = _string(c, f"metadata key {i}")
        vtype = c.u32(f"metadata {key!r} type")
        v = _skip_value(c, vtype, f"metadata {key!r}")
        if key == b"general.alignment":
            if not isinstance(v, int) or v <= 0 or v & (v - 1) or v > 1 << 30:
                raise FormatError(f"general.alignment {v!r} is not a power of two")
            alignment = v
    c.need(n_tensors * 24, "tensor infos")  # name length, ndims, type, offset
    infos = []
    for i in range(n_tensors):
        name = _string(c, f"tensor {i} name").decode("utf-8", errors="replace")
        ndims = c.u32(f"tensor {name!r} dimension count")
        if ndims > 8:
            raise FormatError(f"tensor {name!r}: {ndims} dimensions (at most 8)")
        ne = tuple(c.u64(f"tensor {name!r} dimension") for _ in range(ndims))
        gtype = c.u32(f"tensor {name!r} type")
        rel = c.u64(f"tensor {name!r} offset")
        if gtype not in GGML_TYPES:
            raise FormatError(f"tensor {name!r}: unknown ggml type {gtype}")
        if rel % alignment:
            raise FormatError(f"tensor {name!r}: offset {rel} not aligned to {alignment}")
        infos.append((name, ne, gtype, rel))
    data_start = -(-c.pos // alignment) * alignment
    spans = []
    for name, ne, gtype, rel in infos:
        tname, block, bpb = GGML_TYPES[gtype]
        numel = checked_numel(ne, f"tensor {name!r}")
        if ne and ne[0] % block:
            raise FormatError(f"tensor {name!r}: row of {ne[0]} not a multiple of {block}")
        length = numel // block * bpb
        spans.append(TensorSpan(name, tname, tuple(reversed(ne)), file, data_start + rel, length))
    notes = [f"version {version}, alignment {alignment}, data section at byte {data_start}"]
    return spans, notes
