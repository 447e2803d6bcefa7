"""TensorFlow protobuf pieces shared by the GraphDef and checkpoint readers (wire level)."""

from __future__ import annotations

from cvmfs_modelio.models.formats import _protowire as pw

# tensorflow/core/framework/types.proto DataType -> (numpy-style name, bytes; 0: variable)
DTYPES: dict[int, tuple[str, int]] = {
    1: ("float32", 4),
    2: ("float64", 8),
    3: ("int32", 4),
    4: ("uint8", 1),
    5: ("int16", 2),
    6: ("int8", 1),
    7: ("string", 0),
    8: ("complex64", 8),
    9: ("int64", 8),
    10: ("bool", 1),
    11: ("qint8", 1),
    12: ("quint8", 1),
    13: ("qint32", 4),
    14: ("bfloat16", 2),
    15: ("qint16", 2),
    16: ("quint16", 2),
    17: ("uint16", 2),
    18: ("complex128", 16),
    19: ("float16", 2),
    20: ("resource", 0),
    21: ("variant", 0),
    22: ("uint32", 4),
    23: ("uint64", 8),
}


def dtype_name(code: int) -> str:
    return DTYPES.get(code, (f"tf-type-{code}", 0))[0]


def shape(buf: pw.Buffer, f: pw.Field) -> tuple[int, ...]:
    """A TensorShapeProto (``dim`` = field 2, each ``size`` = field 1); -1 for unknown."""
    dims = []
    for g in pw.fields(buf, f.value, f.end):
        if g.number == 2 and g.wire_type == pw.LEN:
            size = 0
            for h in pw.fields(buf, g.value, g.end):
                if h.number == 1 and h.wire_type == pw.VARINT:
                    size = pw.signed64(h.value)
            dims.append(size)
            if len(dims) > 64:
                raise pw.WireError("more than 64 dimensions")
    return tuple(dims)
