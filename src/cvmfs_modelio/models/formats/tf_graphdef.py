"""TensorFlow frozen graphs (``GraphDef`` protobuf): weights are the ``value`` of Const nodes.

Walked at wire level, without TensorFlow: ``GraphDef.node`` (1) -> ``NodeDef`` (name 1, op 2,
attr 5) -> ``AttrValue.tensor`` (8) -> ``TensorProto`` (dtype 1, tensor_shape 2,
tensor_content 4 = the raw little-endian bytes; the typed ``*_val`` fields hold small or
splatted constants, protobuf-encoded).  Function libraries (field 2) are walked too.
"""

from __future__ import annotations

import os
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats import _protowire as pw
from cvmfs_modelio.models.formats import _tfproto as tp
from cvmfs_modelio.models.formats._io import mapped
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map

FORMAT = "tf-graphdef"
_VAL_FIELDS = {
    4: "tensor_content",
    5: "float_val",
    6: "double_val",
    7: "int_val",
    10: "int64_val",
    11: "bool_val",
    13: "half_val",
    16: "uint32_val",
    17: "uint64_val",
}


def looks_like(buf: pw.Buffer) -> bool:
    """Top-level fields of a GraphDef, and a first node with a name and an op."""
    try:
        first_node = None
        for f in pw.fields(buf, 0, len(buf)):
            if f.number in (1, 2, 4) and f.wire_type != pw.LEN:
                return False
            if f.number == 3 and f.wire_type != pw.VARINT:
                return False
            if f.number > 4:
                return False
            if f.number == 1 and first_node is None:
                first_node = f
        if first_node is None:
            return False
        got = set()
        for g in pw.fields(buf, first_node.value, first_node.end):
            if g.number in (1, 2) and g.wire_type == pw.LEN:
                got.add(g.number)
        return got == {1, 2}
    except pw.WireError:
        return False


def _tensor(buf: pw.Buffer, f: pw.Field, name: str, file: str) -> tuple[TensorSpan | None, str]:
    dtype = 0
    dims: tuple[int, ...] = ()
    data: tuple[int, int, str] | None = None
    for g in pw.fields(buf, f.value, f.end):
        if g.number == 1 and g.wire_type == pw.VARINT:
            dtype = g.value
        elif g.number == 2 and g.wire_type == pw.LEN:
            dims = tp.shape(buf, g)
        elif g.number in _VAL_FIELDS and g.wire_type == pw.LEN and data is None:
            data = (g.value, g.end, _VAL_FIELDS[g.number])
    if data is None:
        return None, ""
    start, end, kind = data
    note = "" if kind == "tensor_content" else f"tensor {name!r}: values in {kind} (encoded)"
    return TensorSpan(name, tp.dtype_name(dtype), dims, file, start, end - start), note


def _node(
    buf: pw.Buffer, node: pw.Field, file: str, out: list[TensorSpan], notes: list[str]
) -> None:
    """One NodeDef: the tensors among its attributes (``value`` of a Const is named as the node)."""
    name = ""
    attrs = []
    for g in pw.fields(buf, node.value, node.end):
        if g.number == 1 and g.wire_type == pw.LEN:
            name = pw.text(buf, g, 1 << 16)
        elif g.number == 5 and g.wire_type == pw.LEN:
            attrs.append(g)
    for a in attrs:
        key = ""
        value = None
        for h in pw.fields(buf, a.value, a.end):
            if h.number == 1 and h.wire_type == pw.LEN:
                key = pw.text(buf, h, 4096)
            elif h.number == 2 and h.wire_type == pw.LEN:
                value = h
        if value is None:
            continue
        for v in pw.fields(buf, value.value, value.end):
            if v.number == 8 and v.wire_type == pw.LEN:
                span, note = _tensor(buf, v, name if key == "value" else f"{name}:{key}", file)
                if span is not None:
                    out.append(span)
                if note:
                    notes.append(note)


def _graph(buf: pw.Buffer, file: str, out: list[TensorSpan], notes: list[str]) -> None:
    for f in pw.fields(buf, 0, len(buf)):
        if f.wire_type != pw.LEN:
            continue
        if f.number == 1:
            _node(buf, f, file, out, notes)
        elif f.number == 2:  # FunctionDefLibrary.function (1) -> FunctionDef.node_def (3)
            for g in pw.fields(buf, f.value, f.end):
                if g.number == 1 and g.wire_type == pw.LEN:
                    for h in pw.fields(buf, g.value, g.end):
                        if h.number == 3 and h.wire_type == pw.LEN:
                            _node(buf, h, file, out, notes)


def read(path: Path) -> ModelMap:
    shown = os.fspath(path)
    file = os.path.abspath(shown)
    spans: list[TensorSpan] = []
    notes: list[str] = []
    with mapped(path) as buf:
        if not looks_like(buf):
            raise UsageError(f"{shown}: not a TensorFlow GraphDef")
        try:
            _graph(buf, file, spans, notes)
        except pw.WireError as e:
            raise UsageError(f"{shown}: not a readable TensorFlow GraphDef ({e})") from None
    return build_map(FORMAT, shown, [shown], spans, notes=notes)
