"""The ways a model's weights get from a file into memory, one module each.

Every loader runs inside the measured child (:mod:`cvmfs_modelio.ort.runner`) and exposes
``load_weights(spec) -> Weights``: the tensors it read (numpy arrays, which an ONNX Runtime
session then takes as external initializers) and what it did.  ``ort`` is the default: ONNX
Runtime reads the model itself (the loader returns no tensors), unless ``--no-mmap`` asks
for external data to be read with ``read()`` instead of mapped.

- ``ort`` (``ort_session``): ONNX Runtime opens the model (embedded: read(), external: mmap);
- ``safetensors-lazy`` (``safetensors_lazy``): ``safetensors.safe_open`` (mmap), only the
  tensors asked for;
- ``safetensors-eager`` (``safetensors_eager``): one ``read()`` of the whole file, then parsed
  (vLLM's eager strategy);
- ``streamer`` (``streamer``): N threads, N file handles, contiguous ranges read in parallel
  (Run:ai Model Streamer).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

LOADERS = {
    "ort": "ort_session",
    "safetensors-lazy": "safetensors_lazy",
    "safetensors-eager": "safetensors_eager",
    "streamer": "streamer",
}


@dataclass
class Weights:
    """Tensors a loader put in memory (name -> numpy array) and facts about how."""

    tensors: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def loader_module(name: str) -> Any:
    """The module implementing loader ``name`` (KeyError if unknown)."""
    return importlib.import_module(f"cvmfs_modelio.ort.loaders.{LOADERS[name]}")
