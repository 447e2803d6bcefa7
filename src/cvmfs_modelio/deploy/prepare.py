"""``prepare``: rewrite an ONNX model into the layout meant for CVMFS.

- ``external_data``: every initializer of at least ``EXTERNAL_THRESHOLD`` bytes goes to one
  ``<model>.data`` beside the ``.onnx`` (smaller ones stay in the graph, as onnx.save_model
  does: ONNX Runtime wants shape-like constants there), each starting at a multiple of
  ``align`` bytes (zero padding between).
- ``order_trace``: tensors laid out in the order a recorded load first touched them
  (tracer output: reads, page faults, and mmap calls, whose range starts at the tensor),
  so lazy chunk fetches stream forward; untouched tensors follow in their original order.
- ``bundle``: a ``.cvmfsbundle-<model>`` listing the companion files (``deploy.bundlespec``).

The graph itself is untouched (same initializer list, nodes, opsets), so ONNX Runtime
computes the same thing; :func:`verify_outputs` checks that it does, bit for bit, on
generated inputs.  Everything is written into a temporary directory inside OUT and renamed
into place only when complete: OUT never holds a half-written model, nothing is written
outside OUT, and the input is never overwritten.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.deploy.bundlespec import BundleSpec, spec_name
from cvmfs_modelio.models.writers import EXTERNAL_THRESHOLD, FILE_MODE, PROTOBUF_LIMIT

ALIGN_CHOICES = (0, 4096, 65536)


@dataclass(frozen=True)
class PrepareOptions:
    """``align`` in bytes (0: tensors packed back to back); ``repo_dir``: the repository
    directory OUT is published as (absolute bundle entries; None: entries relative to the
    spec's directory, which the upstream client resolves the same way)."""

    external_data: bool = False
    align: int = 0
    order_trace: Path | None = None
    bundle: bool = False
    repo_dir: str | None = None
    verify: bool = True

    def validate(self) -> None:
        if self.align < 0 or (self.align and self.align & (self.align - 1)):
            raise UsageError(f"--align: {self.align} is not a power of two")
        if self.repo_dir is not None and not self.repo_dir.startswith("/"):
            raise UsageError(f"--repo-dir: {self.repo_dir!r} does not start with '/'")


@dataclass
class PrepareResult:
    model: Path
    data: Path | None
    bundle: Path | None
    order: list[str]  # external tensors in file order
    offsets: dict[str, int] = field(default_factory=dict)  # external tensor -> offset in data
    outputs_compared: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "data": str(self.data) if self.data else None,
            "bundle": str(self.bundle) if self.bundle else None,
            "tensors_external": len(self.order),
            "order": self.order,
            "offsets_bytes": self.offsets,
            "outputs_compared": self.outputs_compared,
        }


# ------------------------------------------------------------------ checks


def ort_error(path: Path) -> str | None:
    """ONNX Runtime's reason (one line) why it cannot load ``path``, or None if it can."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own types (Fail, InvalidGraph, ...)
        text = " ".join(str(e).split())
        return text or type(e).__name__
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_paths(model: Path, out: Path) -> None:
    if not model.exists():
        raise UsageError(f"{model}: no such file or directory")
    if not model.is_file():
        raise UsageError(f"{model}: not a regular file")
    mdir = os.path.realpath(model.parent)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory")
    if os.path.realpath(out) == mdir:
        raise UsageError(
            f"{out}: is the model's own directory (prepare never overwrites its input)"
        )
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{out}: not empty (prepare writes a fresh directory)")
    parent = out.parent if not out.exists() else out
    if not parent.is_dir():
        raise UsageError(f"{out}: directory {out.parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{out}: cannot write there (permission denied)")


# ------------------------------------------------------------------ tensors


@dataclass
class _Tensor:
    index: int
    name: str
    nbytes: int
    external: tuple[str, int] | None  # (absolute source file, offset) when stored outside
    proto: Any

    def read(self) -> bytes:
        from onnx import numpy_helper

        if self.external is not None:
            path, offset = self.external
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(self.nbytes)
            if len(data) != self.nbytes:
                raise UsageError(
                    f"{path}: external data of tensor {self.name!r} ends early "
                    f"(wanted {self.nbytes} bytes at offset {offset})"
                )
            return data
        if self.proto.HasField("raw_data"):
            return bytes(self.proto.raw_data)
        arr = numpy_helper.to_array(self.proto)
        return bytes(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())


def _tensors(model: Any, model_path: Path) -> list[_Tensor]:
    """Every graph initializer with where its bytes are; refuses data outside the model dir."""
    import onnx
    from onnx import numpy_helper

    mdir = os.path.realpath(model_path.parent)
    out = []
    for i, t in enumerate(model.graph.initializer):
        if t.data_type == onnx.TensorProto.STRING:
            out.append(_Tensor(i, t.name, 0, None, t))
            continue
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            src = os.path.realpath(os.path.join(mdir, loc))
            if not loc or os.path.isabs(loc) or not _inside(src, mdir) or src == mdir:
                raise UsageError(
                    f"{model_path}: tensor {t.name!r}: external data location {loc!r} is "
                    "outside the model's directory (refused)"
                )
            if not os.path.isfile(src):
                raise UsageError(f"{model_path}: tensor {t.name!r}: external data {src} is missing")
            try:
                offset = int(info.get("offset", "0") or "0")
                length = (
                    int(info["length"]) if info.get("length") else os.path.getsize(src) - offset
                )
            except ValueError:
                raise UsageError(
                    f"{model_path}: tensor {t.name!r} has a non-numeric external offset or length"
                ) from None
            out.append(_Tensor(i, t.name, length, (src, offset), t))
            continue
        n = len(t.raw_data) if t.HasField("raw_data") else numpy_helper.to_array(t).nbytes
        out.append(_Tensor(i, t.name, n, None, t))
    return out


def touch_order(trace: Path, model_path: Path) -> list[str]:
    """Initializer names in the order a traced load first touched them (untouched omitted).

    Trace files are matched to the model's files by file name, so a load recorded on a
    mount (``/cvmfs/.../m.onnx.data``) orders the local copy.
    """
    from cvmfs_modelio.chunks.analysis import READ_OPS
    from cvmfs_modelio.core.events import Op
    from cvmfs_modelio.models.inspect import inspect_model
    from cvmfs_modelio.trace.tracer import read_trace

    if not trace.exists():
        raise UsageError(f"--order: {trace}: no such file or directory")
    log = read_trace(trace)
    mm = inspect_model(model_path)
    by_name = {os.path.basename(f.path): f.path for f in mm.files}
    ids = {
        fid: by_name[os.path.basename(e.path)]
        for fid, e in log.files.items()
        if os.path.basename(e.path) in by_name
    }
    if not ids:
        raise UsageError(
            f"--order: {trace}: the trace touches none of the model's files "
            f"({', '.join(sorted(by_name))})"
        )
    ops = {int(o) for o in READ_OPS}
    ev = log.events
    seen: dict[str, None] = {}
    for rec in ev[np.isin(ev["file_id"], list(ids))]:
        op = int(rec["op"])
        if op != int(Op.MMAP) and op not in ops:
            continue
        off, length = int(rec["offset"]), int(rec["length"])
        if off < 0 or length <= 0:
            continue
        spans = mm.tensors_in(ids[int(rec["file_id"])], off, length)
        if op == int(Op.MMAP):
            # ORT maps from the page below the tensor: only tensors starting in the range
            spans = [s for s in spans if s.offset_bytes >= off]
        for s in spans:
            seen.setdefault(s.name, None)
    return list(seen)


# ------------------------------------------------------------------ verification


def generated_inputs(session: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """One input per model input, values seeded (floats normal, integers 0/1, which are
    valid token ids and masks alike); symbolic dimensions as ``ort.child`` sizes them (the
    batch 1, later ones ``SYMBOLIC_DIM``, which ParticleNet's TopK needs)."""
    from cvmfs_modelio.ort.child import SYMBOLIC_DIM

    rng = np.random.Generator(np.random.PCG64(seed))
    feeds: dict[str, np.ndarray] = {}
    for i in session.get_inputs():
        shape = [
            d if isinstance(d, int) and d > 0 else (1 if k == 0 else SYMBOLIC_DIM)
            for k, d in enumerate(i.shape or [])
        ]
        t = i.type
        if "float16" in t:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float16)
        elif "double" in t:
            feeds[i.name] = rng.standard_normal(shape)
        elif "float" in t:
            feeds[i.name] = rng.standard_normal(shape, dtype=np.float32)
        elif "int64" in t:
            feeds[i.name] = rng.integers(0, 2, shape, dtype=np.int64)
        elif "int32" in t:
            feeds[i.name] = rng.integers(0, 2, shape, dtype=np.int32)
        elif "bool" in t:
            feeds[i.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise UsageError(f"input {i.name!r}: cannot generate values of type {t}")
    return feeds


def run_outputs(path: Path, feeds: dict[str, np.ndarray] | None = None) -> list[bytes]:
    """The raw bytes of every output of ``path`` under ONNX Runtime (CPU, no graph
    optimisation beyond the default, one thread: deterministic)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    try:
        outs = s.run(None, feeds if feeds is not None else generated_inputs(s))
    except Exception as e:  # ORT's own exception types
        raise UsageError(
            f"{path}: ONNX Runtime cannot run it on generated inputs: {' '.join(str(e).split())}"
        ) from None
    return [np.ascontiguousarray(o).tobytes() for o in outs]


def verify_outputs(original: Path, rewritten: Path) -> int:
    """Raise UsageError unless both models give bit-identical outputs; returns the count."""
    a, b = run_outputs(original), run_outputs(rewritten)
    if len(a) != len(b) or any(x != y for x, y in zip(a, b, strict=False)):
        raise UsageError(
            f"{rewritten}: outputs differ from {original} under ONNX Runtime (not written)"
        )
    return len(a)


# ------------------------------------------------------------------ prepare


def prepare(
    model_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    opts: PrepareOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> PrepareResult:
    """Write the rewritten model into ``out_dir`` (created; must not exist or be empty)."""
    import onnx

    opts = opts or PrepareOptions()
    opts.validate()
    src, out = Path(model_path), Path(out_dir)
    _check_paths(src, out)
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends: ORT says it best
        reason = ort_error(src) or f"not an ONNX model ({e})"
        raise UsageError(f"{src}: ONNX Runtime cannot load it: {reason}") from None
    # where the weights are, before ONNX Runtime opens any of them
    tensors = _tensors(model, src)
    why = ort_error(src)
    if why is not None:
        raise UsageError(f"{src}: ONNX Runtime cannot load it: {why}")
    had_external = any(t.external is not None for t in tensors)
    externalize = opts.external_data or had_external

    order = [t for t in tensors]
    if opts.order_trace is not None:
        touched = touch_order(opts.order_trace, src)
        rank = {n: i for i, n in enumerate(touched)}
        order.sort(key=lambda t: (rank.get(t.name, len(rank)), t.index))

    created = not out.exists()
    out.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    try:
        result = _write(src, tmp, model, tensors, order, externalize, opts, progress)
        if opts.verify:
            if progress is not None:
                progress("comparing outputs under ONNX Runtime")
            result.outputs_compared = verify_outputs(src, tmp / src.name)
        final: dict[Path, Path] = {}
        for p in (result.model, result.data, result.bundle):
            if p is not None:
                os.chmod(p, FILE_MODE)
                final[p] = out / p.name
        for a, b in final.items():
            os.replace(a, b)
        result.model = final[result.model]
        result.data = final[result.data] if result.data is not None else None
        result.bundle = final[result.bundle] if result.bundle is not None else None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def _write(
    src: Path,
    tmp: Path,
    model: Any,
    tensors: list[_Tensor],
    order: list[_Tensor],
    externalize: bool,
    opts: PrepareOptions,
    progress: Callable[[str], None] | None,
) -> PrepareResult:
    import onnx

    m_path = tmp / src.name
    d_name = src.name + ".data"
    d_path = tmp / d_name
    res = PrepareResult(m_path, None, None, [])
    new_inits: dict[int, Any] = {}
    if externalize:
        with open(d_path, "wb") as f:
            for t in order:
                proto = onnx.TensorProto()
                proto.CopyFrom(t.proto)
                if t.proto.data_type == onnx.TensorProto.STRING:
                    new_inits[t.index] = proto
                    continue
                if t.nbytes < EXTERNAL_THRESHOLD and t.external is None:
                    new_inits[t.index] = proto  # small and embedded: left exactly as it was
                    continue
                data = t.read()
                _clear_data(proto)
                if t.nbytes < EXTERNAL_THRESHOLD:
                    proto.raw_data = data
                    new_inits[t.index] = proto
                    continue
                pos = f.tell()
                if opts.align and pos % opts.align:
                    f.write(bytes(opts.align - pos % opts.align))
                    pos = f.tell()
                f.write(data)
                proto.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (
                    ("location", d_name),
                    ("offset", str(pos)),
                    ("length", str(len(data))),
                ):
                    e = proto.external_data.add()
                    e.key, e.value = k, v
                new_inits[t.index] = proto
                res.order.append(t.name)
                res.offsets[t.name] = pos
                if progress is not None and len(res.order) % 100 == 0:
                    progress(f"{len(res.order)} tensors written")
        res.data = d_path
        inits = [new_inits[t.index] for t in tensors]  # graph order unchanged
    else:
        inits = [t.proto for t in order]  # embedded: the protobuf order is the file layout
        if opts.align:
            raise UsageError("--align: needs external data (add --external-data)")
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    blob = model.SerializeToString()
    if len(blob) > PROTOBUF_LIMIT:
        raise UsageError(f"{src}: the model is above 2 GiB embedded: add --external-data")
    m_path.write_bytes(blob)
    if opts.bundle:
        if res.data is None:
            raise UsageError("--bundle: the model has no companion files (add --external-data)")
        dep = f"{opts.repo_dir.rstrip('/')}/{d_name}" if opts.repo_dir else d_name
        b_path = tmp / spec_name(src.name)
        b_path.write_text(BundleSpec((dep,)).to_json_text())
        res.bundle = b_path
    return res


def _clear_data(proto: Any) -> None:
    for fld in (
        "raw_data",
        "float_data",
        "int32_data",
        "int64_data",
        "double_data",
        "uint64_data",
        "string_data",
    ):
        proto.ClearField(fld)
    proto.ClearField("external_data")
    proto.ClearField("data_location")
