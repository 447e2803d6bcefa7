"""safetensors eager: read the whole file with one ``read()``, then parse it in memory.

vLLM's ``--safetensors-load-strategy eager`` does this for network file systems, where
mapping the file and faulting it in page by page is slow.
"""

from __future__ import annotations

from typing import Any

from cvmfs_modelio.ort.loaders import Weights


def load_weights(spec: dict[str, Any]) -> Weights:
    import safetensors.numpy

    with open(spec["model"], "rb", buffering=0) as f:
        data = f.read()
    tensors = safetensors.numpy.load(data)
    asked = spec.get("tensors")
    if asked:
        missing = [n for n in asked if n not in tensors]
        if missing:
            raise ValueError(f"no tensor named {missing[0]!r} in the file")
        tensors = {n: tensors[n] for n in asked}
    return Weights(dict(tensors), {"how": "one read() of the whole file, then parsed"})
