"""The Open Inference Protocol (KServe v2) over REST, as JSON: requests, responses, inputs.

``POST /v2/models/NAME/infer`` takes ``{"id", "inputs": [{"name", "shape", "datatype",
"data"}]}`` (data flattened in row-major order) and answers ``{"model_name", "id",
"outputs": [...]}`` in the same form.  The inputs of a measurement are made from the
model's graph (read without its weights, so nothing of the files being measured is
paged in): floats from a seeded generator, integers and booleans zero (valid token ids
and masks for embedding lookups), a symbolic leading dimension 1 and a later one
:data:`cvmfs_modelio.ort.child.SYMBOLIC_DIM`, as ``ort-load`` does.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.core.errors import UsageError

# v2 datatype names of the numpy dtypes ONNX models take and give.
DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
NUMPY_DTYPES = {v: k for k, v in DATATYPES.items()}

# ONNX TensorProto element types -> numpy dtype names (onnx.TensorProto.FLOAT is 1 ...).
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}

Feeds = dict[str, npt.NDArray[Any]]


def model_inputs(onnx_path: str | os.PathLike[str], seed: int = 0) -> Feeds:
    """Deterministic inputs for every graph input of ``onnx_path`` (initializers excluded)."""
    import onnx

    from cvmfs_modelio.ort.child import SYMBOLIC_DIM

    try:
        model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    except Exception as e:  # onnx raises many types on a bad file
        raise UsageError(f"{onnx_path}: not a readable ONNX model ({type(e).__name__})") from None
    weights = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    for inp in model.graph.input:
        if inp.name in weights:
            continue
        tt = inp.type.tensor_type
        dtype = _ONNX_DTYPES.get(tt.elem_type)
        if dtype is None or not inp.type.HasField("tensor_type"):
            raise UsageError(f"{onnx_path}: input {inp.name}: no v2 datatype for its element type")
        shape = [
            d.dim_value
            if d.HasField("dim_value") and d.dim_value > 0
            else (1 if i == 0 else SYMBOLIC_DIM)
            for i, d in enumerate(tt.shape.dim)
        ]
        if dtype.startswith("float"):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    if not feeds:
        raise UsageError(f"{onnx_path}: the graph has no inputs to send")
    return feeds


def request_body(feeds: Feeds, request_id: str = "kserve-compare") -> bytes:
    """The JSON body of a v2 infer request carrying ``feeds``."""
    inputs = []
    for name, arr in feeds.items():
        dt = DATATYPES.get(arr.dtype.name)
        if dt is None:
            raise UsageError(f"input {name}: no v2 datatype for {arr.dtype.name}")
        inputs.append(
            {"name": name, "shape": list(arr.shape), "datatype": dt, "data": arr.ravel().tolist()}
        )
    return json.dumps({"id": request_id, "inputs": inputs}).encode()


def parse_response(body: bytes) -> dict[str, npt.NDArray[Any]]:
    """The outputs of a v2 infer response, by name; ValueError if it is not one."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise ValueError("not a v2 infer response (no outputs)")
    out: dict[str, npt.NDArray[Any]] = {}
    for o in doc["outputs"]:
        dtype = NUMPY_DTYPES.get(str(o.get("datatype")))
        if dtype is None:
            raise ValueError(f"output {o.get('name')}: unknown datatype {o.get('datatype')}")
        out[str(o["name"])] = np.asarray(o["data"], dtype=dtype).reshape(o["shape"])
    return out


def infer_path(model_name: str) -> str:
    return f"/v2/models/{model_name}/infer"


def post(port: int, path: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
    """One HTTP/1.1 POST to 127.0.0.1:``port``; (status, body).  OSError if not reachable."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        # No Nagle delay on the small request: it would add up to 40 ms to one round trip.
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
