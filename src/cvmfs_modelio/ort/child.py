"""ONNX Runtime session creation and first inference, timed in a fresh process.

The campaign runs ``python -m cvmfs_modelio.ort.child [--disable-prepacking] MODEL`` as a
child so that nothing of a previous load (ORT's own caches, Python's imports of the model's
pages) survives into the next measurement.  The child imports ONNX Runtime *before* it
starts the clock, creates an ``InferenceSession`` with ORT's default options (graph
optimisation and weight prepacking on, so every initializer is read while the session is
created; ``--disable-prepacking`` sets ``session.disable_prepacking=1``, which leaves
external-data weights untouched until the first run), runs one inference on zero inputs
and prints one JSON line::

    {"session_ns": 123, "first_inference_ns": 45, "prepacking": true, "inputs": {...}}
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

# ORT's input element types ("tensor(float)") to numpy dtype names.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


# A symbolic dimension after the first (particles, vertices...) gets this many entries:
# graph ops such as ParticleNet's TopK(k=16) need more than a handful.
SYMBOLIC_DIM = 64


def zero_inputs(session: Any) -> dict[str, Any]:
    """Zero-filled inputs for every graph input.

    A symbolic or unknown leading dimension (the batch) becomes 1, any later one
    :data:`SYMBOLIC_DIM`.
    """
    import numpy as np

    feeds: dict[str, Any] = {}
    for inp in session.get_inputs():
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {inp.name}: unsupported element type {inp.type}")
        shape = [
            d if isinstance(d, int) and d > 0 else (1 if i == 0 else SYMBOLIC_DIM)
            for i, d in enumerate(inp.shape or [])
        ]
        feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


def load_and_run(model: str, *, prepacking: bool = True) -> dict[str, Any]:
    """Create a session for ``model`` and run it once; times in ns (CLOCK_MONOTONIC)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if not prepacking:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    t0 = time.monotonic_ns()
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    t1 = time.monotonic_ns()
    feeds = zero_inputs(session)
    t2 = time.monotonic_ns()
    session.run(None, feeds)
    t3 = time.monotonic_ns()
    return {
        "session_ns": t1 - t0,
        "first_inference_ns": t3 - t2,
        "prepacking": prepacking,
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
        "onnxruntime": ort.__version__,
    }


def main(argv: list[str]) -> int:
    prepacking = "--disable-prepacking" not in argv
    args = [a for a in argv if a != "--disable-prepacking"]
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write(
            "usage: python -m cvmfs_modelio.ort.child [--disable-prepacking] MODEL.onnx\n"
        )
        return 2
    try:
        result = load_and_run(args[0], prepacking=prepacking)
    except Exception as e:  # reported as one line naming the model
        sys.stderr.write(
            f"{args[0]}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
        )
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
