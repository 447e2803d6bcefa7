"""safetensors lazy: ``safe_open`` maps the file; only the tensors asked for are read.

Each ``get_tensor`` copies one tensor out of the mapping into a numpy array, so the pages a
run touches are exactly those of the tensors asked for (plus the kernel's read-around).
"""

from __future__ import annotations

from typing import Any

from cvmfs_modelio.ort.loaders import Weights


def load_weights(spec: dict[str, Any]) -> Weights:
    from safetensors import safe_open

    tensors = {}
    with safe_open(spec["model"], framework="numpy") as f:
        names = list(f.keys())
        asked = spec.get("tensors") or names
        missing = [n for n in asked if n not in names]
        if missing:
            raise ValueError(f"no tensor named {missing[0]!r} in the file")
        for name in asked:
            tensors[name] = f.get_tensor(name)
    return Weights(tensors, {"how": "safe_open (mmap) + get_tensor per tensor", "asked": asked})
