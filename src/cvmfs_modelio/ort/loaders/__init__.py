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


# ------------------------------------------------------------------ campaign loaders

CAMPAIGN_LOADERS = {
    "safetensors-lazy": "safetensors safe_open (mmap) + get_tensor of every tensor",
    "safetensors-eager": "one read() of the whole safetensors file, then parsed",
    "streamer": "N threads read contiguous ranges of the file in parallel (Run:ai streamer)",
}


@dataclass(frozen=True)
class WeightsLoader:
    """A campaign loader (``campaign.loaders.Loader``) running one of these loaders in
    ``ort.runner``: the time until every tensor of the entry file is in memory.

    A campaign model is the entry file and its companions, so a ``.safetensors`` model has
    no graph beside it on the mount: nothing to run, the weights are the measurement
    (``time_to_first_inference_ns`` is the weights load, as for the probe loaders)."""

    name: str
    description: str
    concurrency: int = 16  # ort-load's defaults (ort.load.DEFAULT_CONCURRENCY, DEFAULT_BLOCK)
    block_bytes: int = 2 << 20

    def argv(self, entry: Any, files: Any) -> list[str]:
        import json
        import sys

        spec = {
            "loader": self.name,
            "model": str(entry),
            "graph": None,
            "tensors": None,
            "threads": 1,
            "disable_prepacking": False,
            "mmap": None,
            "concurrency": self.concurrency,
            "block_bytes": self.block_bytes,
            "profile": False,
            "profile_dir": "",
            "runs": 0,
        }
        return [sys.executable, "-m", "cvmfs_modelio.ort.runner", json.dumps(spec)]

    def parse(self, stdout: str) -> Any:
        from cvmfs_modelio.campaign.loaders import LoadResult, last_json_line
        from cvmfs_modelio.core.errors import UsageError

        doc = last_json_line(stdout, f"loader {self.name}")
        if not doc.get("ok", False):
            raise UsageError(f"{doc.get('error', 'error')}: {doc.get('message', '')}")
        marks = {m["name"]: m["end_ns"] - m["start_ns"] for m in doc["marks"]}
        t = int(marks["weights_load"])
        info = {"loader_info": doc.get("loader_info"), "tensors": doc.get("tensors_loaded")}
        return LoadResult(0, 0, t, int(doc["bytes_loaded"]), info)


def campaign_loaders() -> list[WeightsLoader]:
    """The loaders above as campaign loaders (``campaign.loaders`` picks this hook up)."""
    return [WeightsLoader(n, d) for n, d in CAMPAIGN_LOADERS.items()]
