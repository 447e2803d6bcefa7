"""Keras HDF5 (``model.save('m.h5')``) and any HDF5 file: every dataset's bytes, via h5py.

A contiguous dataset is one span (``id.get_offset()``, ``id.get_storage_size()``); a chunked
dataset is one span per allocated chunk (``id.get_chunk_info``), named ``<path>[chunk i]``,
and filtered (compressed) chunks are noted; a compact dataset lives inside its object header
and has no offset of its own (noted, counted as metadata).  Datasets holding variable-length
data (strings) are not weights and are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map

FORMAT = "keras-h5"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:  # pragma: no cover - a declared dependency
        raise UsageError("reading HDF5 needs h5py (pip install h5py)") from None
    return h5py


def read(path: Path) -> ModelMap:
    shown = os.fspath(path)
    file = os.path.abspath(shown)
    h5py = _h5py()
    spans: list[TensorSpan] = []
    notes: list[str] = []
    try:
        with h5py.File(path, "r") as h:
            fmt = FORMAT if ("keras_version" in h.attrs or "model_weights" in h) else "hdf5"
            datasets: list[tuple[str, Any]] = []
            h.visititems(
                lambda name, obj: (
                    datasets.append((name, obj)) if isinstance(obj, h5py.Dataset) else None
                )
            )
            for name, ds in datasets:
                _dataset(h5py, name, ds, file, spans, notes)
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise UsageError(f"{shown}: not a readable HDF5 file ({e})") from None
    return build_map(fmt, shown, [shown], spans, notes=notes)


def _dataset(
    h5py: Any, name: str, ds: Any, file: str, spans: list[TensorSpan], notes: list[str]
) -> None:
    dt = ds.dtype
    if dt.kind in ("O", "S", "U", "V") and dt.names is None and dt.kind != "V":
        return
    dtype = str(dt) if dt.names is None else "struct"
    shape = tuple(int(d) for d in ds.shape)
    layout = ds.id.get_create_plist().get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        off = ds.id.get_offset()
        size = ds.id.get_storage_size()
        if off is None:
            if size or ds.size:
                notes.append(f"dataset {name!r}: no storage allocated")
            return
        spans.append(TensorSpan(name, dtype, shape, file, int(off), int(size)))
    elif layout == h5py.h5d.CHUNKED:
        n = ds.id.get_num_chunks()
        chunk_shape = tuple(int(d) for d in (ds.chunks or ()))
        if ds.compression or ds.id.get_create_plist().get_nfilters():
            notes.append(f"dataset {name!r}: chunks filtered ({ds.compression or 'filter'})")
        for i in range(n):
            info = ds.id.get_chunk_info(i)
            spans.append(
                TensorSpan(
                    f"{name}[chunk {i}]",
                    dtype,
                    chunk_shape,
                    file,
                    int(info.byte_offset),
                    int(info.size),
                )
            )
    else:
        notes.append(f"dataset {name!r}: compact ({ds.id.get_storage_size()} bytes in its header)")
