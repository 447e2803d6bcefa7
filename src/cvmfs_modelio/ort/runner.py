"""The measured child of ``ort-load``: load a model one way, create a session, run it twice.

``python -m cvmfs_modelio.ort.runner SPEC_JSON`` (written by :mod:`cvmfs_modelio.ort.load`)
imports numpy, ONNX Runtime and the loader's modules *before* anything is timed, then:

1. measures the offset between CLOCK_REALTIME and CLOCK_MONOTONIC (``core.clocks``): ONNX
   Runtime's profiler and log stamp the system clock, everything else is CLOCK_MONOTONIC;
2. ``weights_load`` (loaders other than ONNX Runtime's own, and ``--no-mmap``): the loader
   puts the tensors in memory;
3. ``session``: ``InferenceSession`` (with the loaded tensors as external initializers),
   with ONNX Runtime's profiler on and its log at INFO level on stderr when ``profile``;
4. ``first_run`` and ``second_run`` on generated inputs (zeros; see ``child.zero_inputs``).

It prints one JSON line: the phase marks (CLOCK_MONOTONIC ns), the clock offset and its
uncertainty, the profiler's start (CLOCK_REALTIME ns) and file, and what the loader did; or
``{"ok": false, "error": ..., "message": ...}`` and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from cvmfs_modelio.core.clocks import realtime_minus_monotonic


class Marks:
    """Phase marks on CLOCK_MONOTONIC."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, start: int, end: int) -> None:
        self.items.append({"name": name, "start_ns": start, "end_ns": end})


def session_options(spec: dict[str, Any], ort: Any) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(spec.get("threads") or 1)
    so.inter_op_num_threads = 1
    if spec.get("disable_prepacking"):
        so.add_session_config_entry("session.disable_prepacking", "1")
    if spec["graph"].endswith(".ort") and spec.get("mmap") is not None:
        so.add_session_config_entry(
            "session.use_memory_mapped_ort_model", "1" if spec["mmap"] else "0"
        )
    if spec.get("profile"):
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(spec["profile_dir"], "ort_profile")
        so.log_severity_level = 1  # INFO: ORT's own sub-phase messages, stamped to the ns
    else:
        so.log_severity_level = 3
    return so


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from cvmfs_modelio.ort.child import zero_inputs
    from cvmfs_modelio.ort.loaders import loader_module

    loader = loader_module(spec["loader"])
    if spec["loader"] != "ort":
        import safetensors.numpy  # noqa: F401  (imported before the clock starts)
    if spec.get("graph"):
        import onnx  # noqa: F401  (the ort loader parses external data with it)
    offset, unc = realtime_minus_monotonic()
    marks = Marks()
    out: dict[str, Any] = {"ok": True, "pid": os.getpid(), "onnxruntime": ort.__version__}
    out["ready_ns"] = time.monotonic_ns()
    t0 = time.monotonic_ns()
    weights = loader.load_weights(spec)
    t1 = time.monotonic_ns()
    if weights.tensors or spec["loader"] != "ort":
        marks.add("weights_load", t0, t1)
    out["loader_info"] = weights.info
    out["tensors_loaded"] = len(weights.tensors)
    out["bytes_loaded"] = int(sum(int(a.nbytes) for a in weights.tensors.values()))
    graph = spec.get("graph")
    if graph:
        so = session_options(spec, ort)
        if weights.tensors:
            names = list(weights.tensors)
            values = [
                ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(weights.tensors[n]))
                for n in names
            ]
            so.add_external_initializers(names, values)
        t0 = time.monotonic_ns()
        session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
        t1 = time.monotonic_ns()
        marks.add("session", t0, t1)
        feeds = zero_inputs(session)
        out["inputs"] = {k: list(v.shape) for k, v in feeds.items()}
        for name in ("first_run", "second_run")[: int(spec.get("runs", 2))]:
            t0 = time.monotonic_ns()
            session.run(None, feeds)
            t1 = time.monotonic_ns()
            marks.add(name, t0, t1)
        if spec.get("profile"):
            out["profiling_start_realtime_ns"] = int(session.get_profiling_start_time_ns())
            out["profile_file"] = session.end_profiling()
    out["done_ns"] = time.monotonic_ns()
    out["marks"] = marks.items
    out["clock"] = {"realtime_minus_monotonic_ns": offset, "uncertainty_ns": unc}
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m cvmfs_modelio.ort.runner SPEC_JSON\n")
        return 2
    spec = json.loads(argv[0])
    try:
        result = run(spec)
    except Exception as e:  # reported as one JSON line; the parent names the user's file
        msg = str(e).strip().splitlines()
        sys.stdout.write(
            json.dumps({"ok": False, "error": type(e).__name__, "message": msg[0] if msg else ""})
            + "\n"
        )
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
