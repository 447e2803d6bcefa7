"""A parallel streamer: N threads with N file handles read contiguous parts of the file.

The way Run:ai's Model Streamer loads safetensors: the data region is split into N
contiguous ranges of about equal size; each thread opens the file itself (its own handle:
on CVMFS, its own chunk download stream) and ``preadv``s its range in blocks into one
buffer; the tensors are views into that buffer.  The GIL is released during every read.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from typing import Any

from cvmfs_modelio.ort.loaders import Weights

_NP = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def ranges(start: int, end: int, n: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into at most ``n`` contiguous ranges of about equal size."""
    total = end - start
    n = max(1, min(n, total)) if total > 0 else 1
    cuts = [start + total * i // n for i in range(n + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(n) if cuts[i + 1] > cuts[i]]


def load_weights(spec: dict[str, Any]) -> Weights:
    import numpy as np

    path = spec["model"]
    workers = int(spec.get("concurrency") or 16)
    block = int(spec.get("block_bytes") or (2 << 20))
    with open(path, "rb", buffering=0) as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        size = os.fstat(f.fileno()).st_size
    base = 8 + n
    buf = np.empty(size - base, dtype=np.uint8)
    view = memoryview(buf.data)
    errors: list[BaseException] = []

    def worker(lo: int, hi: int) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                pos = lo
                while pos < hi:
                    want = min(block, hi - pos)
                    got = os.preadv(fd, [view[pos - base : pos - base + want]], pos)
                    if got <= 0:
                        raise OSError(f"short read at byte {pos} of {path}")
                    pos += got
            finally:
                os.close(fd)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    parts = ranges(base, size, workers)
    threads = [threading.Thread(target=worker, args=p) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    asked = spec.get("tensors")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or (asked and name not in asked):
            continue
        lo, hi = info["data_offsets"]
        dt = np.dtype(_NP[info["dtype"]])
        tensors[name] = buf[lo:hi].view(dt).reshape(info["shape"])
    if asked:
        missing = [a for a in asked if a not in tensors]
        if missing:
            raise ValueError(f"no tensor named {missing[0]!r} in the file")
    return Weights(
        tensors,
        {
            "how": f"{len(parts)} threads x own handle, preadv blocks of {block} bytes",
            "threads": len(parts),
            "block_bytes": block,
        },
    )
