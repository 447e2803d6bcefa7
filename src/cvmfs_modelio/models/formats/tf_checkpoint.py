"""TensorFlow checkpoints (TensorBundle): ``<prefix>.index`` + ``<prefix>.data-NNNNN-of-NNNNN``.

The index is a LevelDB-format table (an SSTable: data blocks of prefix-compressed key/value
entries with restart points, an index block, a 48-byte footer ending in magic
``0xdb4775248b80fb57``), read here without TensorFlow or LevelDB.  Each key is a tensor name,
each value a ``BundleEntryProto`` (dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6,
slices 7); the empty key holds the ``BundleHeaderProto`` (num_shards 1, endianness 2).
TensorFlow writes the bundle index uncompressed; a Snappy-compressed block is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats import _protowire as pw
from cvmfs_modelio.models.formats import _tfproto as tp
from cvmfs_modelio.models.formats._io import FormatError, mapped
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map
from cvmfs_modelio.models.paths import resolve_inside

FORMAT = "tf-checkpoint"
MAGIC = 0xDB4775248B80FB57
FOOTER = 48
MAX_SHARDS = 1 << 16


def _handle(buf: Any, pos: int, end: int) -> tuple[int, int, int]:
    off, pos = pw.read_varint(buf, pos, end)
    size, pos = pw.read_varint(buf, pos, end)
    return off, size, pos


def _block(buf: Any, off: int, size: int) -> list[tuple[bytes, tuple[int, int]]]:
    """Entries of the block at ``off`` as (key, (value start, value end))."""
    n = len(buf)
    if off < 0 or size < 4 or off + size + 5 > n:
        raise FormatError(f"block at {off} of {size} bytes lies outside the file")
    ctype = buf[off + size]
    if ctype != 0:
        raise FormatError(f"block at {off} is compressed (type {ctype}); only raw blocks are read")
    num_restarts = int.from_bytes(buf[off + size - 4 : off + size], "little")
    limit = off + size - 4 - 4 * num_restarts
    if num_restarts == 0 or limit < off:
        raise FormatError(f"block at {off}: bad restart count {num_restarts}")
    out = []
    pos = off
    key = b""
    while pos < limit:
        shared, pos = pw.read_varint(buf, pos, limit)
        unshared, pos = pw.read_varint(buf, pos, limit)
        vlen, pos = pw.read_varint(buf, pos, limit)
        if shared > len(key) or unshared > limit - pos or vlen > limit - pos - unshared:
            raise FormatError(f"block at {off}: entry at {pos} runs past the block")
        key = key[:shared] + bytes(buf[pos : pos + unshared])
        pos += unshared
        out.append((key, (pos, pos + vlen)))
        pos += vlen
    return out


def read_index(buf: Any) -> list[tuple[bytes, tuple[int, int]]]:
    """Every (key, value range) of the SSTable in ``buf``, in key order."""
    n = len(buf)
    if n < FOOTER or int.from_bytes(buf[n - 8 : n], "little") != MAGIC:
        raise FormatError("no table magic in the footer")
    base = n - FOOTER
    _meta_off, _meta_size, pos = _handle(buf, base, n - 8)
    idx_off, idx_size, _ = _handle(buf, pos, n - 8)
    entries = []
    for _sep, (vs, ve) in _block(buf, idx_off, idx_size):
        off, size, _ = _handle(buf, vs, ve)
        entries.extend(_block(buf, off, size))
    return entries


def read(path: Path) -> ModelMap:
    shown = os.fspath(path)
    with mapped(path) as buf:
        try:
            entries = read_index(buf)
            header, tensors = _entries(buf, entries)
        except (FormatError, pw.WireError) as e:
            raise UsageError(f"{shown}: not a readable TensorFlow checkpoint index ({e})") from None
    num_shards = header.get("num_shards", 1)
    if header.get("endianness", 0) != 0:
        raise UsageError(f"{shown}: big-endian checkpoint bundles are not supported")
    if not 1 <= num_shards <= MAX_SHARDS:
        raise UsageError(f"{shown}: bad shard count {num_shards}")
    prefix = path.name[: -len(".index")] if path.name.endswith(".index") else path.name
    model_dir = path.resolve().parent
    shards: dict[int, str] = {}
    spans = []
    notes = []
    for name, dtype, shape, shard, off, size, slices in tensors:
        if slices:
            notes.append(f"tensor {name!r} is saved as slices (not mapped)")
            continue
        if not 0 <= shard < num_shards:
            raise UsageError(f"{shown}: tensor {name!r} names shard {shard} of {num_shards}")
        if shard not in shards:
            loc = f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"
            target = resolve_inside(model_dir, loc, what=shown)
            if not target.is_file():
                raise UsageError(f"{shown}: data shard {loc} is missing ({target})")
            shards[shard] = str(target)
        spans.append(TensorSpan(name, dtype, shape, shards[shard], off, size))
    files = [os.path.abspath(shown), *sorted(set(shards.values()))]
    return build_map(FORMAT, shown, files, spans, notes=notes)


def _entries(
    buf: Any, entries: list[tuple[bytes, tuple[int, int]]]
) -> tuple[dict[str, int], list[tuple[str, str, tuple[int, ...], int, int, int, bool]]]:
    header: dict[str, int] = {}
    out = []
    for key, (vs, ve) in entries:
        if key == b"":
            for f in pw.fields(buf, vs, ve):
                if f.wire_type == pw.VARINT and f.number in (1, 2):
                    header["num_shards" if f.number == 1 else "endianness"] = f.value
            continue
        name = key.decode("utf-8", errors="replace")
        dtype, shard, off, size, slices = 0, 0, 0, 0, False
        shape: tuple[int, ...] = ()
        for f in pw.fields(buf, vs, ve):
            if f.number == 1 and f.wire_type == pw.VARINT:
                dtype = f.value
            elif f.number == 2 and f.wire_type == pw.LEN:
                shape = tp.shape(buf, f)
            elif f.number == 3 and f.wire_type == pw.VARINT:
                shard = f.value
            elif f.number == 4 and f.wire_type == pw.VARINT:
                off = pw.signed64(f.value)
            elif f.number == 5 and f.wire_type == pw.VARINT:
                size = pw.signed64(f.value)
            elif f.number == 7:
                slices = True
        out.append((name, tp.dtype_name(dtype), shape, shard, off, size, slices))
    return header, out
