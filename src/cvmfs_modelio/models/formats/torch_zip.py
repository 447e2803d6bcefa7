"""PyTorch / TorchScript zip archives (``torch.save`` since 1.6, ``torch.jit.save``).

The archive is ``<prefix>/data.pkl`` (the object tree), ``<prefix>/data/<key>`` (one stored,
uncompressed entry per storage, 64-byte aligned by PyTorch's writer) and, for TorchScript,
``code/``, ``constants.pkl`` and ``version``.  Each storage entry's bytes are located through
its local file header (the central directory's sizes are not trusted alone).  Tensor names,
dtypes, shapes and offsets within a storage come from ``data.pkl`` read by the code-free
pickle walker (``_pickle``); a storage no tensor names is still listed, as ``data/<key>``.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats import _pickle as pk
from cvmfs_modelio.models.formats._io import FormatError
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map

FORMAT = "torch-zip"
MAX_PICKLE = 256 << 20
STORAGE_DTYPES = {
    "FloatStorage": ("float32", 4),
    "DoubleStorage": ("float64", 8),
    "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2),
    "LongStorage": ("int64", 8),
    "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1),
    "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
    "ComplexFloatStorage": ("complex64", 8),
    "ComplexDoubleStorage": ("complex128", 16),
    "Float8_e4m3fnStorage": ("float8_e4m3fn", 1),
    "Float8_e5m2Storage": ("float8_e5m2", 1),
}
_REBUILD_TENSOR = {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor"}
_REBUILD_PARAM = {"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"}


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\0" not in name


def _data_offset(f: Any, info: zipfile.ZipInfo, size: int) -> int:
    """Offset of the entry's bytes: past its local header (whose name/extra lengths count)."""
    f.seek(info.header_offset)
    head = f.read(30)
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        raise FormatError(f"entry {info.filename!r}: no local header at {info.header_offset}")
    n, m = struct.unpack("<HH", head[26:30])
    start: int = info.header_offset + 30 + n + m
    if start + info.compress_size > size:
        raise FormatError(f"entry {info.filename!r} runs past the end of the archive")
    return start


def read(path: Path) -> ModelMap:
    shown = os.fspath(path)
    file = os.path.abspath(shown)
    size = os.stat(path).st_size
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as z:
            infos = z.infolist()
            for i in infos:
                if not _safe_name(i.filename):
                    raise FormatError(f"entry name {i.filename!r} is unsafe (absolute or '..')")
            pkls = [i for i in infos if PurePosixPath(i.filename).name == "data.pkl"]
            if not pkls:
                raise FormatError("no data.pkl: not a PyTorch or TorchScript archive")
            pkl = min(pkls, key=lambda i: i.filename.count("/"))
            prefix = str(PurePosixPath(pkl.filename).parent)
            storages: dict[str, tuple[int, int, bool]] = {}
            for i in infos:
                parts = PurePosixPath(i.filename).parts
                if (
                    len(parts) >= 2
                    and parts[-2] in ("data", "constants")
                    and (
                        str(PurePosixPath(*parts[:-2])) == prefix
                        or (prefix == "." and len(parts) == 2)
                    )
                ):
                    key = parts[-1] if parts[-2] == "data" else f"constants/{parts[-1]}"
                    stored = i.compress_type == zipfile.ZIP_STORED
                    storages[key] = (_data_offset(f, i, size), i.file_size, stored)
            if pkl.file_size > min(MAX_PICKLE, size * 1024):
                raise FormatError(f"data.pkl declares {pkl.file_size} bytes")
            with z.open(pkl) as fp:
                data = fp.read(MAX_PICKLE + 1)
            tree = pk.walk(data)
            consts: Any = None
            cinfo = [i for i in infos if i.filename == f"{prefix}/constants.pkl"]
            if cinfo and cinfo[0].file_size <= MAX_PICKLE:
                with z.open(cinfo[0]) as fp:
                    consts = pk.walk(fp.read(MAX_PICKLE + 1))
    except zipfile.BadZipFile as e:
        raise UsageError(f"{shown}: not a readable zip archive ({e})") from None
    except (FormatError, OSError, EOFError, RuntimeError, NotImplementedError) as e:
        raise UsageError(f"{shown}: not a readable PyTorch archive ({e})") from None
    try:
        spans, notes = _spans(tree, consts, storages, file)
    except FormatError as e:
        raise UsageError(f"{shown}: not a readable PyTorch archive ({e})") from None
    return build_map(FORMAT, shown, [shown], spans, notes=notes, allow_overlap=True)


def _storage(pid: Any) -> tuple[str, str, int] | None:
    """(key, dtype, itemsize) of a ``('storage', type, key, location, numel)`` persistent id."""
    if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
        return None
    typ, key = pid[1], pid[2]
    tname = typ.name if isinstance(typ, pk.Global) else ""
    if tname not in STORAGE_DTYPES:
        raise FormatError(f"storage type {tname or typ!r} is not known")
    dtype, size = STORAGE_DTYPES[tname]
    return str(key), dtype, size


def _tensor(call: pk.Call) -> tuple[Any, int, tuple[int, ...], tuple[int, ...]] | None:
    """(persistent id, storage offset, size, stride) of a tensor-rebuilding call."""
    fname = call.func.qualname if isinstance(call.func, pk.Global) else ""
    args = call.args if isinstance(call.args, tuple) else ()
    if fname in _REBUILD_PARAM and args and isinstance(args[0], pk.Call):
        return _tensor(args[0])
    if fname not in _REBUILD_TENSOR or len(args) < 4 or not isinstance(args[0], pk.PersistentId):
        return None
    off, shape, stride = args[1], args[2], args[3]
    if not (
        type(off) is int
        and isinstance(shape, tuple)
        and isinstance(stride, tuple)
        and all(type(d) is int for d in (*shape, *stride))
        and len(shape) == len(stride)
    ):
        raise FormatError(f"tensor rebuilt with bad arguments {args[1:4]!r}")
    return args[0].pid, off, shape, stride


def _spans(
    tree: Any, consts: Any, storages: dict[str, tuple[int, int, bool]], file: str
) -> tuple[list[TensorSpan], list[str]]:
    spans: list[TensorSpan] = []
    notes: list[str] = []
    used: set[str] = set()
    seen: set[int] = set()

    def visit(node: Any, name: str, depth: int) -> None:
        if depth > 200 or id(node) in seen:
            return
        if isinstance(node, (dict, list, tuple, pk.Obj, pk.Call)):
            seen.add(id(node))
        if isinstance(node, pk.Call):
            t = _tensor(node)
            if t is not None:
                place(name, *t)
                return
            visit(node.args, name, depth + 1)
            visit(node.state, name, depth + 1)
        elif isinstance(node, pk.Obj):
            visit(node.state, name, depth + 1)
        elif isinstance(node, dict):
            for k, v in node.items():
                visit(v, f"{name}.{k}" if name else str(k), depth + 1)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                visit(v, f"{name}.{i}" if name else str(i), depth + 1)

    def place(
        name: str, pid: Any, off: int, shape: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        st = _storage(pid)
        if st is None:
            raise FormatError(f"tensor {name!r}: persistent id {pid!r} is not a storage")
        key, dtype, item = st
        if key not in storages:
            raise FormatError(f"tensor {name!r}: storage {key!r} is not in the archive")
        start, nbytes, stored = storages[key]
        if not stored:
            notes.append(f"tensor {name!r}: storage {key!r} is compressed, bytes not mappable")
            return
        if off < 0 or any(d < 0 for d in shape) or any(s < 0 for s in stride):
            raise FormatError(f"tensor {name!r}: negative offset, size or stride")
        extent = (
            0 if 0 in shape else 1 + sum((d - 1) * s for d, s in zip(shape, stride, strict=True))
        )
        if (off + extent) * item > nbytes:
            raise FormatError(
                f"tensor {name!r}: elements {off}..{off + extent} of a {nbytes}-byte storage"
            )
        used.add(key)
        spans.append(TensorSpan(name, dtype, shape, file, start + off * item, extent * item))

    visit(tree, "", 0)
    if consts is not None:
        visit(consts, "constants", 0)
    for key, (start, nbytes, stored) in sorted(storages.items()):
        if key not in used and stored:
            spans.append(TensorSpan(f"data/{key}", "uint8", (nbytes,), file, start, nbytes))
            notes.append(f"storage {key!r} is named by no tensor of data.pkl")
    return spans, notes
