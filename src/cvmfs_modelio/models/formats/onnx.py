"""ONNX (protobuf): initializers, Constant-node and subgraph tensors, embedded or external data.

The protobuf is walked at wire level (``_protowire``) so that each tensor's payload
(``raw_data`` or a packed ``*_data`` field) is located exactly in the ``.onnx`` file; tensors
with ``data_location = EXTERNAL`` are placed in their external file from ``location`` /
``offset`` / ``length``, the location confined to the model's directory
(:func:`cvmfs_modelio.models.paths.resolve_inside`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.formats import _protowire as pw
from cvmfs_modelio.models.formats._io import FormatError, checked_numel, mapped
from cvmfs_modelio.models.inspect import ModelMap, TensorSpan, build_map
from cvmfs_modelio.models.paths import resolve_inside

FORMAT = "onnx"

# TensorProto.DataType -> (numpy-style name, bits per element; 0: variable, e.g. strings)
DTYPES: dict[int, tuple[str, int]] = {
    1: ("float32", 32),
    2: ("uint8", 8),
    3: ("int8", 8),
    4: ("uint16", 16),
    5: ("int16", 16),
    6: ("int32", 32),
    7: ("int64", 64),
    8: ("string", 0),
    9: ("bool", 8),
    10: ("float16", 16),
    11: ("float64", 64),
    12: ("uint32", 32),
    13: ("uint64", 64),
    14: ("complex64", 64),
    15: ("complex128", 128),
    16: ("bfloat16", 16),
    17: ("float8_e4m3fn", 8),
    18: ("float8_e4m3fnuz", 8),
    19: ("float8_e5m2", 8),
    20: ("float8_e5m2fnuz", 8),
    21: ("uint4", 4),
    22: ("int4", 4),
    23: ("float4_e2m1", 4),
    24: ("float8_e8m0", 8),
    25: ("uint2", 2),
    26: ("int2", 2),
}
# TensorProto fields that hold the values (raw_data first: what every modern writer uses).
_DATA_FIELDS = {
    9: "raw_data",
    4: "float_data",
    5: "int32_data",
    7: "int64_data",
    10: "double_data",
    11: "uint64_data",
    6: "string_data",
}
_EXTERNAL = 1


@dataclass
class TensorRecord:
    """What the wire walk found for one TensorProto (offsets are into the ``.onnx`` file)."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    data_start: int = -1  # payload of the first data field seen
    data_end: int = -1
    data_field: str = ""
    external: dict[str, str] = field(default_factory=dict)
    location_external: bool = False

    @property
    def dtype(self) -> str:
        return DTYPES.get(self.data_type, (f"onnx-type-{self.data_type}", 0))[0]

    def nbytes(self) -> int | None:
        bits = DTYPES.get(self.data_type, ("", 0))[1]
        if bits == 0:
            return None
        return (checked_numel(self.dims, f"tensor {self.name!r}") * bits + 7) // 8


@dataclass
class OnnxWalk:
    """Every tensor of a model, its IR version and whether it had a graph at all."""

    tensors: list[TensorRecord] = field(default_factory=list)
    has_graph: bool = False
    ir_version: int = 0
    nodes: int = 0


def _tensor(buf: pw.Buffer, start: int, end: int, default_name: str) -> TensorRecord:
    rec = TensorRecord(default_name, 0, ())
    dims: list[int] = []
    for f in pw.fields(buf, start, end):
        if f.number == 1:
            dims.extend(pw.signed64(v) for v in pw.packed_varints(buf, f))
        elif f.number == 2 and f.wire_type == pw.VARINT:
            rec.data_type = f.value
        elif f.number == 8 and f.wire_type == pw.LEN:
            name = pw.text(buf, f)
            if name:
                rec.name = name
        elif f.number in _DATA_FIELDS and f.wire_type == pw.LEN and rec.data_start < 0:
            rec.data_start, rec.data_end = f.value, f.end
            rec.data_field = _DATA_FIELDS[f.number]
        elif f.number == 13 and f.wire_type == pw.LEN:
            key = value = ""
            for g in pw.fields(buf, f.value, f.end):
                if g.number == 1 and g.wire_type == pw.LEN:
                    key = pw.text(buf, g, 4096)
                elif g.number == 2 and g.wire_type == pw.LEN:
                    value = pw.text(buf, g, 1 << 16)
            rec.external[key] = value
        elif f.number == 14 and f.wire_type == pw.VARINT:
            rec.location_external = f.value == _EXTERNAL
    rec.dims = tuple(dims)
    return rec


class _Walker:
    def __init__(self, buf: pw.Buffer) -> None:
        self.buf = buf
        self.out = OnnxWalk()

    def model(self, start: int, end: int) -> None:
        for f in pw.fields(self.buf, start, end):
            if f.number == 1 and f.wire_type == pw.VARINT:
                self.out.ir_version = f.value
            elif f.number == 7 and f.wire_type == pw.LEN:
                self.out.has_graph = True
                self.graph(f.value, f.end, 1)
            elif f.number == 25 and f.wire_type == pw.LEN:  # FunctionProto: nodes are field 7
                for g in pw.fields(self.buf, f.value, f.end):
                    if g.number == 7 and g.wire_type == pw.LEN:
                        self.node(g.value, g.end, 2)
            elif f.number in (7, 25):
                raise pw.WireError(f"field {f.number} of the model is not a message")

    def graph(self, start: int, end: int, depth: int) -> None:
        if depth > pw.MAX_DEPTH:
            raise pw.WireError("subgraphs nested too deeply")
        for f in pw.fields(self.buf, start, end):
            if f.wire_type != pw.LEN:
                continue
            if f.number == 1:
                self.node(f.value, f.end, depth + 1)
            elif f.number == 5:
                self.out.tensors.append(_tensor(self.buf, f.value, f.end, "<unnamed>"))
            elif f.number == 15:  # SparseTensorProto: values (1) and indices (2) tensors
                for g in pw.fields(self.buf, f.value, f.end):
                    if g.number in (1, 2) and g.wire_type == pw.LEN:
                        part = "values" if g.number == 1 else "indices"
                        t = _tensor(self.buf, g.value, g.end, f"<sparse>:{part}")
                        self.out.tensors.append(t)

    def node(self, start: int, end: int, depth: int) -> None:
        self.out.nodes += 1
        name = ""
        first_output = ""
        attrs: list[pw.Field] = []
        for f in pw.fields(self.buf, start, end):
            if f.wire_type != pw.LEN:
                continue
            if f.number == 2 and not first_output:
                first_output = pw.text(self.buf, f, 4096)
            elif f.number == 3:
                name = pw.text(self.buf, f, 4096)
            elif f.number == 5:
                attrs.append(f)
        owner = name or first_output or "<node>"
        for a in attrs:
            attr_name = ""
            subs: list[tuple[int, pw.Field]] = []
            for g in pw.fields(self.buf, a.value, a.end):
                if g.wire_type != pw.LEN:
                    continue
                if g.number == 1:
                    attr_name = pw.text(self.buf, g, 4096)
                elif g.number in (5, 10, 6, 11):
                    subs.append((g.number, g))
            for number, g in subs:
                if number in (5, 10):
                    default = first_output if number == 5 and first_output else owner
                    self.out.tensors.append(
                        _tensor(self.buf, g.value, g.end, f"{default}:{attr_name}")
                    )
                else:
                    self.graph(g.value, g.end, depth + 1)


def walk(buf: pw.Buffer) -> OnnxWalk:
    """All tensors of the ModelProto in ``buf`` (raises WireError on malformed bytes)."""
    w = _Walker(buf)
    w.model(0, len(buf))
    return w.out


def looks_like(buf: pw.Buffer) -> bool:
    """Structure test: a ModelProto whose top-level fields parse and that holds a graph."""
    try:
        has_graph = False
        for f in pw.fields(buf, 0, len(buf)):
            if f.number == 7:
                if f.wire_type != pw.LEN:
                    return False
                has_graph = True
            elif (f.number == 1 and f.wire_type != pw.VARINT) or (
                f.number in (2, 3, 4, 6, 8) and f.wire_type != pw.LEN
            ):
                return False
        return has_graph
    except pw.WireError:
        return False


def walk_file(path: Path) -> OnnxWalk:
    """:func:`walk` of the file at ``path``; UsageError if it is not an ONNX model."""
    shown = os.fspath(path)
    with mapped(path) as buf:
        try:
            w = walk(buf)
        except (pw.WireError, FormatError) as e:
            raise UsageError(f"{shown}: not a readable ONNX model ({e})") from None
    if not w.has_graph:
        raise UsageError(f"{shown}: not a readable ONNX model (no graph)")
    return w


def external_files(path: Path, *, strict: bool = True) -> list[Path]:
    """The external data files ``path`` (an ``.onnx``) names, resolved inside its directory.

    Every ``location`` goes through :func:`resolve_inside`: one that is absolute, has ``..``
    or resolves (symlinks included) outside the model's directory is a UsageError naming the
    model, the tensor and the location.  Whether the files exist is the caller's question.
    ``strict=False``: a file that is not ONNX gives [] (for callers that let another reader
    report it) instead of a UsageError.
    """
    shown = os.fspath(path)
    try:
        w = walk_file(path)
    except UsageError:
        if strict:
            raise
        return []
    model_dir = Path(os.path.abspath(shown)).parent
    out: dict[Path, None] = {}
    for t in w.tensors:
        if t.location_external or t.external:
            loc = t.external.get("location", "")
            out[resolve_inside(model_dir, loc, what=f"{shown}: tensor {t.name!r}")] = None
    return sorted(out)


def read(path: Path) -> ModelMap:
    """Tensor map of the ``.onnx`` file at ``path`` and of its external data files."""
    shown = os.fspath(path)
    w = walk_file(path)
    model_file = os.path.abspath(shown)
    model_dir = Path(model_file).parent
    files: dict[str, None] = {model_file: None}
    spans: list[TensorSpan] = []
    notes: list[str] = []
    for t in w.tensors:
        try:
            nbytes = t.nbytes()
        except FormatError as e:
            raise UsageError(f"{shown}: {e}") from None
        if t.location_external or (t.external and t.data_start < 0):
            spans.append(_external_span(shown, model_dir, t, nbytes, files))
        elif t.data_start >= 0:
            length = t.data_end - t.data_start
            if t.data_field != "raw_data":
                notes.append(f"tensor {t.name!r}: values in {t.data_field} (protobuf-encoded)")
            spans.append(TensorSpan(t.name, t.dtype, t.dims, model_file, t.data_start, length))
        elif nbytes:
            notes.append(f"tensor {t.name!r}: no data in the file")
    return build_map(FORMAT, shown, list(files), spans, notes=notes)


def _external_span(
    shown: str,
    model_dir: Path,
    t: TensorRecord,
    nbytes: int | None,
    files: dict[str, None],
) -> TensorSpan:
    loc = t.external.get("location", "")
    target = resolve_inside(model_dir, loc, what=f"{shown}: tensor {t.name!r}")
    try:
        size = os.stat(target).st_size
    except FileNotFoundError:
        raise UsageError(
            f"{shown}: external data file {loc!r} of tensor {t.name!r} is missing ({target})"
        ) from None
    except OSError as e:
        raise UsageError(f"{shown}: cannot read external data {target}: {e.strerror}") from None
    try:
        offset = int(t.external.get("offset", "0") or "0")
        length = int(t.external["length"]) if t.external.get("length") else -1
    except ValueError:
        raise UsageError(
            f"{shown}: tensor {t.name!r} has a non-numeric external offset or length"
        ) from None
    if length < 0:
        length = nbytes if nbytes is not None else size - offset
    if offset < 0 or length < 0:
        raise UsageError(f"{shown}: tensor {t.name!r} has a negative external offset or length")
    files[str(target)] = None
    return TensorSpan(t.name, t.dtype, t.dims, str(target), offset, length)


def referencing_models(data_file: Path) -> list[Path]:
    """``.onnx`` files beside ``data_file`` that keep tensors in it (by ``location``)."""
    out = []
    for p in sorted(data_file.parent.glob("*.onnx")):
        try:
            with mapped(p) as buf:
                if not looks_like(buf):
                    continue
                w = walk(buf)
        except (pw.WireError, FormatError, UsageError):
            continue
        want = data_file.resolve()
        for loc in {t.external.get("location", "") for t in w.tensors if t.external}:
            try:
                if resolve_inside(p.parent, loc) == want:
                    out.append(p)
                    break
            except UsageError:
                continue
    return out
