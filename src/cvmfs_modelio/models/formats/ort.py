"""ONNX Runtime's ``.ort`` format: a flatbuffer (file identifier ``ORTM``) holding the graph.

Read with the flatbuffers schema module that onnxruntime itself ships
(``onnxruntime.tools.ort_format_model.ort_flatbuffers_py``), so the layout follows the
installed runtime.  Initializers, Constant-node and subgraph tensors keep their bytes in a
``raw_data`` vector inside the file; a tensor stored with ``external_data_offset`` (ORT's
option for large initializers) is listed in the notes: the format does not name its file.

Flatbuffer accessors do not check bounds, so every vector is checked against the buffer
before it is walked, and a malformed file surfaces as one UsageError.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats._io import FormatError, mapped
from cvmfs_modelio.models.formats.onnx import DTYPES
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map

FORMAT = "ort"
_RAW_DATA_SLOT = 12  # vtable offset of Tensor.raw_data in ort.fbs
_MAX_DEPTH = 32


def _fbs() -> Any:
    try:
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs
    except ImportError as e:  # pragma: no cover - ships with every onnxruntime wheel
        raise UsageError(f"the ORT flatbuffers schema module is not available ({e})") from None
    return fbs


class _Walk:
    def __init__(self, buf: Any, file: str) -> None:
        self.buf = buf
        self.size = len(buf)
        self.file = file
        self.spans: list[TensorSpan] = []
        self.notes: list[str] = []
        self.fbs = _fbs()

    def count(self, n: int, what: str, elem: int = 4) -> int:
        if n < 0 or n * elem > self.size:
            raise FormatError(f"{what}: {n} entries cannot fit in {self.size} bytes")
        return n

    def tensor(self, t: Any, default: str) -> None:
        raw_name = t.Name()
        name = raw_name.decode("utf-8", "replace") if raw_name else default
        ndims = self.count(t.DimsLength(), f"tensor {name!r} dims", 8)
        dims = tuple(int(t.Dims(i)) for i in range(ndims))
        dtype = DTYPES.get(t.DataType(), (f"onnx-type-{t.DataType()}", 0))[0]
        ext = t.ExternalDataOffset()
        o = t._tab.Offset(_RAW_DATA_SLOT)
        if o:
            start = t._tab.Vector(o)
            n = t._tab.VectorLen(o)
            if start < 0 or n < 0 or start + n > self.size:
                raise FormatError(f"tensor {name!r}: raw data runs past the end of the file")
            self.spans.append(TensorSpan(name, dtype, dims, self.file, start, n))
        elif ext >= 0:
            self.notes.append(f"tensor {name!r}: external data at offset {ext} (file not named)")
        elif t.StringDataLength():
            self.notes.append(f"tensor {name!r}: string data, not mapped")

    def graph(self, g: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise FormatError("subgraphs nested too deeply")
        for i in range(self.count(g.InitializersLength(), "initializers")):
            self.tensor(g.Initializers(i), f"<initializer {i}>")
        for i in range(self.count(g.SparseInitializersLength(), "sparse initializers")):
            sp = g.SparseInitializers(i)
            for part, t in (("values", sp.Values()), ("indices", sp.Indices())):
                if t is not None:
                    self.tensor(t, f"<sparse {i}>:{part}")
        for i in range(self.count(g.NodesLength(), "nodes")):
            node = g.Nodes(i)
            if node is None:
                continue
            owner = (node.Name() or b"").decode("utf-8", "replace") or f"<node {i}>"
            if node.OutputsLength():
                owner = node.Outputs(0).decode("utf-8", "replace") or owner
            for j in range(self.count(node.AttributesLength(), "attributes")):
                a = node.Attributes(j)
                an = (a.Name() or b"").decode("utf-8", "replace")
                if a.T() is not None:
                    self.tensor(a.T(), f"{owner}:{an}")
                for k in range(self.count(a.TensorsLength(), "attribute tensors")):
                    self.tensor(a.Tensors(k), f"{owner}:{an}[{k}]")
                if a.G() is not None:
                    self.graph(a.G(), depth + 1)
                for k in range(self.count(a.GraphsLength(), "attribute graphs")):
                    self.graph(a.Graphs(k), depth + 1)


def read(path: Path) -> ModelMap:
    shown = os.fspath(path)
    fbs = _fbs()
    with mapped(path) as buf:
        if len(buf) < 8 or bytes(buf[4:8]) != b"ORTM":
            raise UsageError(f"{shown}: not an ORT format model (no ORTM identifier)")
        w = _Walk(buf, os.path.abspath(shown))
        try:
            session = fbs.InferenceSession.InferenceSession.GetRootAs(buf, 0)
            model = session.Model()
            if model is None or model.Graph() is None:
                raise FormatError("no model graph")
            version = (session.OrtVersion() or b"?").decode("utf-8", "replace")
            w.notes.append(f"ORT format version {version}, ONNX IR version {model.IrVersion()}")
            w.graph(model.Graph(), 0)
        except (FormatError, struct.error, IndexError, ValueError, TypeError, OverflowError) as e:
            raise UsageError(f"{shown}: not a readable ORT format model ({e})") from None
    return build_map(FORMAT, shown, [shown], w.spans, notes=w.notes)
