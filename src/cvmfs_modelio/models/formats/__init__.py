"""One reader per model format; :func:`read_model` picks one from the file's content.

Each reader module has ``FORMAT`` (the name in :class:`~cvmfs_modelio.models.inspect.ModelMap`)
and ``read(path) -> ModelMap``.  Detection looks at magic numbers first (GGUF, HDF5, zip,
ORT flatbuffers, MXNet, LevelDB tables), then at structure (safetensors header, ONNX and
TensorFlow protobufs); a file that holds only weights is mapped through the model file beside
it that names it.  Suffixes only break ties between formats that have no magic.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import struct
from pathlib import Path
from types import ModuleType

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.inspect import ModelMap

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SSTABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
MXNET_LIST_MAGIC = 0x112
TF_SHARD_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<n>\d{5})$")

READERS = (
    "gguf",
    "keras_h5",
    "torch_zip",
    "safetensors",
    "ort",
    "mxnet",
    "tf_checkpoint",
    "onnx",
    "tf_graphdef",
)
FORMATS = (
    "onnx",
    "ort",
    "safetensors",
    "gguf",
    "torch-zip",
    "keras-h5",
    "tf-checkpoint",
    "tf-graphdef",
    "mxnet-params",
)


def reader(name: str) -> ModuleType:
    return importlib.import_module(f"cvmfs_modelio.models.formats.{name}")


def _head_tail(path: Path, size: int) -> tuple[bytes, bytes]:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            if size > 4096:
                f.seek(size - 64)
            tail = f.read(64) if size > 4096 else head[-64:]
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror or e}") from None
    return head, tail


def detect(path: Path) -> str | None:
    """The reader module name for the file at ``path``, or None if no format matches."""
    size = path.stat().st_size
    head, tail = _head_tail(path, size)
    if head[:4] == b"GGUF":
        return "gguf"
    if any(head[o : o + 8] == HDF5_MAGIC for o in (0, 512, 1024, 2048)):
        return "keras_h5"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "torch_zip"
    if len(head) >= 8 and head[4:8] == b"ORTM":
        return "ort"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 0:
        return "safetensors"
    if len(head) >= 16 and struct.unpack("<Q", head[:8])[0] == MXNET_LIST_MAGIC:
        return "mxnet"
    if size >= 48 and tail[-8:] == SSTABLE_MAGIC:
        return "tf_checkpoint"
    from cvmfs_modelio.models.formats import _io, onnx, tf_graphdef

    with _io.mapped(path) as buf:
        if onnx.looks_like(buf):
            return "onnx"
        if tf_graphdef.looks_like(buf):
            return "tf_graphdef"
    return None


# Formats without a magic number: when the content does not say, the suffix picks the reader
# (so a truncated .onnx gets the ONNX reader's reason rather than "unknown format").
SUFFIX_READERS = {
    ".onnx": "onnx",
    ".ort": "ort",
    ".pb": "tf_graphdef",
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".h5": "keras_h5",
    ".hdf5": "keras_h5",
    ".pt": "torch_zip",
    ".pth": "torch_zip",
    ".params": "mxnet",
    ".index": "tf_checkpoint",
}


def _is_pickle(head: bytes) -> bool:
    return head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5


def _what_else(path: Path) -> str:
    """Why a file that no reader takes is not a model (the end of the one-line error)."""
    size = path.stat().st_size
    if size == 0:
        return "empty file, not a model"
    head, _ = _head_tail(path, size)
    if _is_pickle(head):
        return (
            "a Python pickle (e.g. a legacy torch.save file): not read, unpickling runs "
            "arbitrary code"
        )
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed data: unpack it first"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            with open(path, "rb") as f:
                json.loads(f.read(1 << 20))
            return "JSON text, not a model (a graph or config file?)"
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        head.decode("utf-8")
        if b"\0" not in head:
            return "text, not a model"
    except UnicodeDecodeError:
        pass
    return "not a model in a known format (" + ", ".join(FORMATS) + ")"


def read_model(path: Path) -> ModelMap:
    """The tensor map of ``path`` (a model file, a weights file beside one, or a directory)."""
    shown = os.fspath(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{shown}: no such file") from None
    except OSError as e:
        raise UsageError(f"{shown}: cannot read: {e.strerror or e}") from None
    if path.is_dir():
        for cand in (path / "variables" / "variables.index", path / "variables.index"):
            if cand.is_file():
                return reader("tf_checkpoint").read(cand)  # type: ignore[no-any-return]
        raise UsageError(f"{shown}: is a directory (give the model file)")
    if not path.is_file():
        raise UsageError(f"{shown}: not a regular file")
    name = detect(path)
    if name is not None:
        return reader(name).read(path)  # type: ignore[no-any-return]
    m = TF_SHARD_RE.match(path.name)
    if m:
        index = path.with_name(m["prefix"] + ".index")
        if index.is_file():
            return reader("tf_checkpoint").read(index)  # type: ignore[no-any-return]
        raise UsageError(f"{shown}: TensorFlow checkpoint shard without its {index.name}")
    from cvmfs_modelio.models.formats import onnx

    owners = onnx.referencing_models(path)
    if owners:
        return onnx.read(owners[0])
    by_suffix = SUFFIX_READERS.get(path.suffix.lower())
    if by_suffix and st.st_size > 0 and not _is_pickle(_head_tail(path, st.st_size)[0]):
        return reader(by_suffix).read(path)  # type: ignore[no-any-return]
    raise UsageError(f"{shown}: {_what_else(path)}")
