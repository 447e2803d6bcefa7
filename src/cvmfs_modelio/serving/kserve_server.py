"""The measured model server: KServe's ``ModelServer`` with an ONNX Runtime model class.

``python -m cvmfs_modelio.serving.kserve_server SPEC_JSON`` (written by :mod:`.compare`)
loads the model as a KServe predictor does (``model.load()`` before ``ModelServer.start``,
so the REST port opens only once the model is ready), then serves the v2 REST protocol
on 127.0.0.1 with an OS-chosen port and no gRPC.  The spec::

    {"model": "/path/model.onnx", "name": "m", "marks": "/tmp/.../marks.json", "threads": 1}

Before serving it writes ``marks`` (CLOCK_MONOTONIC ns: ``imported_ns`` when ``kserve``
and ONNX Runtime are imported, ``loaded_ns`` when the session exists, and ``load_ns``),
atomically, so the parent can split the time to first inference into its parts.

Why the patch of ``RESTServer``: KServe 0.21 hard-codes ``host="0.0.0.0"`` in the
``uvicorn.Config`` it builds and has no flag for it; here nothing may listen beyond
loopback, so the one class is replaced by a subclass that sets the host to 127.0.0.1
before uvicorn binds (the parent checks the sockets in ``/proc`` afterwards).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

LOOPBACK = "127.0.0.1"


def _write_marks(path: str, marks: dict[str, int]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(marks, f)
    os.replace(tmp, path)


def serve(spec: dict[str, Any]) -> None:
    """Load ``spec["model"]`` and serve it until killed."""
    # KServe parses sys.argv for its own flags when kserve.model_server is imported
    # (--http_port, --workers...): it must see none of ours.
    sys.argv = sys.argv[:1]
    import kserve
    import kserve.model_server
    import numpy as np
    import onnxruntime as ort
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.protocol.rest.server import RESTServer
    from kserve.utils.numpy_codec import from_np_dtype

    imported = time.monotonic_ns()

    class LoopbackRESTServer(RESTServer):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = LOOPBACK

    kserve.model_server.RESTServer = LoopbackRESTServer

    class OnnxRuntimeModel(kserve.Model):  # type: ignore[misc]
        """A KServe predictor answering v2 requests with one ONNX Runtime session."""

        def __init__(self, name: str, path: str, threads: int) -> None:
            super().__init__(name)
            self.path = path
            self.threads = threads
            self.session: Any = None

        def load(self) -> bool:
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
            self.ready = True
            return True

        def predict(
            self,
            payload: InferRequest,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> InferResponse:
            feeds = {i.name: i.as_numpy() for i in payload.inputs}
            names = [o.name for o in self.session.get_outputs()]
            results = self.session.run(names, feeds)
            outputs = []
            for name, value in zip(names, results, strict=True):
                arr = np.asarray(value)
                out = InferOutput(name, list(arr.shape), from_np_dtype(arr.dtype))
                out.set_data_from_numpy(arr, binary_data=False)
                outputs.append(out)
            # v2 makes the request id optional; the response's must be a string.
            rid = payload.id if payload.id is not None else uuid.uuid4().hex
            return InferResponse(rid, self.name, outputs)

    model = OnnxRuntimeModel(spec["name"], spec["model"], int(spec.get("threads") or 1))
    t0 = time.monotonic_ns()
    model.load()
    loaded = time.monotonic_ns()
    marks = {"imported_ns": imported, "loaded_ns": loaded, "load_ns": loaded - t0}
    _write_marks(spec["marks"], marks)
    server = kserve.ModelServer(http_port=0, enable_grpc=False, workers=1)
    server.start([model])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m cvmfs_modelio.serving.kserve_server SPEC_JSON\n")
        return 2
    spec = json.loads(argv[0])
    try:
        serve(spec)
    except Exception as e:  # one line for the parent, which names the user's file
        text = str(e).strip().splitlines()
        sys.stderr.write(f"{type(e).__name__}: {text[0] if text else ''}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
