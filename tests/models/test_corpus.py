"""The corpus generators: determinism, modes, layouts, ONNX Runtime runs, limits, size."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models import corpus, writers
from cvmfs_modelio.models.inspect import inspect_model
from cvmfs_modelio.models.synthetic import make_model

SMALL = 3 << 20
SYNTHETIC = [k for k in corpus.KINDS if not k.startswith("minilm")]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _out(tmp: Path, kind: str) -> Path:
    _arch, form = corpus.parse_kind(kind)
    return tmp / f"{kind}{corpus.SUFFIX.get(form, '.onnx')}"


@pytest.fixture
def umask077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


# sha256 of make_model's files, recorded before this branch changed anything (onnx 1.23):
# the cvmfs-timing test vectors were made with these bytes.
MAKE_MODEL_VECTORS = [
    ((48 << 20,), {}, "3c91494e9c3c021074816e815213ae5565d46913fb09b4816e694e39c80eed1c", None),
    (
        (48 << 20,),
        {"external_data": True},
        "ba9921ddc50ed7c0ba239c9d274f72ce18784a8f89e6d64ce60a12ca81d08848",
        "c245bc563695a28fff404bef2a478a14cd1cbb19c4824613a8623b7a323569c2",
    ),
    (
        (3 * 4 * 64 * 64,),
        {"width": 64, "seed": 3, "external_data": True},
        "481194d9dac4fdc66528a8d7dc2ae6b66e83dcafd9cda987b30ea7e64b6580f0",
        "b37062aa76ddf417f4202212b8dd6f8875a7f70eae8bee1c729f3a7bfb4cbf24",
    ),
]


@pytest.mark.parametrize(("args", "kw", "onnx_sha", "data_sha"), MAKE_MODEL_VECTORS)
def test_make_model_bytes_unchanged_and_files_0644(
    tmp_path: Path, umask077: None, args: tuple[int], kw: dict, onnx_sha: str, data_sha: str | None
) -> None:
    if onnx.__version__ != "1.23.2":
        pytest.skip(f"vectors recorded with onnx 1.23.2, this is {onnx.__version__}")
    m = make_model(tmp_path / "m.onnx", *args, **kw)
    assert _sha(m.onnx) == onnx_sha
    assert (m.data is None) == (data_sha is None)
    if m.data is not None:
        assert _sha(m.data) == data_sha
    for p in (m.onnx, m.data):
        if p is not None:
            assert p.stat().st_mode & 0o777 == 0o644, p


@pytest.mark.parametrize("kind", SYNTHETIC)
def test_kind_is_deterministic_0644_and_maps(tmp_path: Path, umask077: None, kind: str) -> None:
    a = corpus.make(kind, _out(tmp_path, kind), size_bytes=SMALL, seed=7)
    (tmp_path / "b").mkdir()
    b = corpus.make(kind, _out(tmp_path / "b", kind), size_bytes=SMALL, seed=7)
    (tmp_path / "c").mkdir()
    c = corpus.make(kind, _out(tmp_path / "c", kind), size_bytes=SMALL, seed=8)
    assert [p.name for p in a.files] == [p.name for p in b.files]
    for pa, pb, pc in zip(a.files, b.files, c.files, strict=True):
        if kind.endswith("-ort"):
            _same_ort(pa, pb)
        else:
            assert pa.read_bytes() == pb.read_bytes(), pa.name
        assert pa.stat().st_mode & 0o777 == 0o644, pa
        if pa.stat().st_size > 1 << 20:
            assert pa.read_bytes() != pc.read_bytes()  # the seed matters
    assert sorted(os.listdir(tmp_path)) == sorted(["b", "c", *(p.name for p in a.files)])
    m = inspect_model(a.files[0])
    _arch, form = corpus.parse_kind(kind)
    assert m.format == {"ort": "ort", "safetensors": "safetensors"}.get(form, "onnx")
    # The decoder's ConstantOfShape carries one more (4-byte) tensor in a node attribute.
    extra = 4 if kind.startswith("decoder") and form != "safetensors" else 0
    assert m.weight_bytes - a.weight_bytes == extra
    assert [f.path for f in m.files] == [str(p) for p in a.files]
    external = [t for t in m.tensors if t.file.endswith(".data")]
    if form in corpus.ALIGN:
        assert external and all(t.length_bytes >= writers.EXTERNAL_THRESHOLD for t in external)
        align = corpus.ALIGN[form]
        if align:
            assert all(t.offset_bytes % align == 0 for t in external)
        else:  # packed: each tensor starts where the previous one ends
            assert [t.offset_bytes for t in external[1:]] == [t.end_bytes for t in external[:-1]]
            assert min(t.alignment for t in external) < 4096
    else:
        assert not external


def _same_ort(pa: Path, pb: Path) -> None:
    """ONNX Runtime 1.32 writes the kernel-type-string resolver table of an .ort file in an
    order that varies from run to run (it follows pointer-keyed maps); everything else, every
    tensor byte and offset included, is identical."""
    a, b = pa.read_bytes(), pb.read_bytes()
    assert len(a) == len(b)
    first = min(t.offset_bytes for t in inspect_model(pa).tensors)
    diff = [i for i in range(first) if a[i] != b[i]]
    assert a[first:] == b[first:]
    if diff:
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs

        resolver = fbs.InferenceSession.InferenceSession.GetRootAs(a, 0).KernelTypeStrResolver()
        model = fbs.InferenceSession.InferenceSession.GetRootAs(a, 0).Model()
        assert resolver._tab.Pos <= min(diff) and max(diff) < model._tab.Pos + first


def _feeds(kind: str) -> dict[str, np.ndarray]:
    if kind.startswith("mlp"):
        x = np.random.Generator(np.random.PCG64(0)).standard_normal((2, corpus.MLP_INPUTS))
        return {"x": x.astype(np.float32)}
    return {"input_ids": np.array([[5, 17, 3, 999, 42, 7]], dtype=np.int64)}


@pytest.mark.parametrize("arch", ["mlp", "decoder"])
def test_every_onnx_form_runs_and_agrees(tmp_path: Path, arch: str) -> None:
    outs = {}
    for form in ("onnx", "onnx-ext", "onnx-ext4k", "onnx-ext64k", "ort"):
        kind = f"{arch}-{form}"
        g = corpus.make(kind, _out(tmp_path, kind), size_bytes=SMALL, seed=1)
        sess = ort.InferenceSession(str(g.files[0]), providers=["CPUExecutionProvider"])
        outs[form] = sess.run(None, _feeds(kind))[0]
        assert np.isfinite(outs[form]).all()
    for form, y in outs.items():
        if form == "ort":  # saved unoptimized: ORT fuses differently, float rounding differs
            np.testing.assert_allclose(y, outs["onnx"], rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(y, outs["onnx"], err_msg=form)
    if arch == "mlp":
        np.testing.assert_allclose(outs["onnx"].sum(axis=1), 1.0, rtol=1e-5)  # softmax
    else:  # causal: changing the last token leaves the earlier positions' logits alone
        sess = ort.InferenceSession(str(_out(tmp_path, "decoder-onnx")))
        ids = _feeds("decoder")["input_ids"].copy()
        ids[0, -1] = 1
        y2 = sess.run(None, {"input_ids": ids})[0]
        np.testing.assert_array_equal(y2[0, :-1], outs["onnx"][0, :-1])
        assert not np.array_equal(y2[0, -1], outs["onnx"][0, -1])


@pytest.mark.parametrize("arch", ["mlp", "decoder"])
def test_safetensors_and_ort_hold_the_same_weights(tmp_path: Path, arch: str) -> None:
    from safetensors import safe_open

    maps = {}
    for form in ("onnx", "safetensors", "ort"):
        g = corpus.make(f"{arch}-{form}", _out(tmp_path, f"{arch}-{form}"), size_bytes=SMALL)
        maps[form] = inspect_model(g.files[0])
    model = onnx.load(str(_out(tmp_path, f"{arch}-onnx")))
    ref = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    _model, ws, _params = (corpus.mlp if arch == "mlp" else corpus.decoder)(SMALL, 0)
    params = {w.name for w in ws if not w.constant}
    assert params <= set(ref)  # graph constants (shapes, scales) stay out of safetensors
    assert (params == set(ref)) == (arch == "mlp")
    with safe_open(str(_out(tmp_path, f"{arch}-safetensors")), "np") as f:
        assert set(f.keys()) == params
        for k in params:
            np.testing.assert_array_equal(f.get_tensor(k), ref[k])
    for form in ("onnx", "ort"):
        m = maps[form]
        attr = {"v"} if arch == "decoder" else set()  # ConstantOfShape's value attribute
        assert {t.name for t in m.tensors} == set(ref) | attr
        for t in (t for t in m.tensors if t.name in ref):
            with open(t.file, "rb") as fh:
                fh.seek(t.offset_bytes)
                assert fh.read(t.length_bytes) == ref[t.name].tobytes(), (form, t.name)


def test_streaming_embedded_writer_is_byte_identical_to_onnx_save(tmp_path: Path) -> None:
    for model, ws, _ in (corpus.mlp(2 << 20, 5), corpus.decoder(3 << 20, 2)):
        writers.write_onnx_embedded(tmp_path / "s.onnx", model, ws)
        full = onnx.ModelProto()
        full.CopyFrom(model)
        for w in ws:
            arr = np.concatenate([np.asarray(b).ravel() for b in w.blocks()]).astype(w.dtype)
            full.graph.initializer.append(numpy_helper.from_array(arr.reshape(w.shape), w.name))
        onnx.save(full, str(tmp_path / "ref.onnx"))
        assert (tmp_path / "s.onnx").read_bytes() == (tmp_path / "ref.onnx").read_bytes()


def test_synthetic_weights_compress_like_trained_ones(tmp_path: Path) -> None:
    g = corpus.make("mlp-safetensors", tmp_path / "m.safetensors", size_bytes=8 << 20)
    m = inspect_model(g.files[0])
    raw = b"".join(
        g.files[0].read_bytes()[t.offset_bytes : t.end_bytes]
        for t in m.tensors
        if t.length_bytes >= 4096
    )
    ratio = len(zlib.compress(raw, 6)) / len(raw)
    assert 0.91 < ratio < 0.95  # real CMS weights: 0.93 (test_inspect_real)
    # No 1 MiB block repeats (chunk-level deduplication must find nothing, as for real data).
    blocks = [raw[i : i + (1 << 20)] for i in range(0, len(raw) - (1 << 20), 1 << 20)]
    assert len(set(blocks)) == len(blocks)


def test_limits_and_bad_arguments_are_one_line(tmp_path: Path) -> None:
    big = 2200 << 20
    with pytest.raises(UsageError) as e:
        corpus.make("mlp-onnx", tmp_path / "m.onnx", size_bytes=big)
    assert str(e.value) == (
        f"{tmp_path / 'm.onnx'}: 2287356296 bytes of weights cannot be embedded "
        "(protobuf limit 2 GiB); use an external-data form"
    )
    with pytest.raises(UsageError) as e:
        corpus.make("decoder-ort", tmp_path / "m.ort", size_bytes=big)
    assert str(e.value).endswith(
        "bytes of weights: ONNX Runtime cannot write an .ort model above the 2 GiB flatbuffer limit"
    )
    with pytest.raises(UsageError, match=r"^unknown model kind 'mlp-zip' \(kinds: mlp-onnx, "):
        corpus.make("mlp-zip", tmp_path / "x")
    with pytest.raises(UsageError) as e:
        corpus.make("mlp-onnx", tmp_path)
    assert str(e.value) == f"{tmp_path}: is a directory (give the model file to write)"
    with pytest.raises(UsageError) as e:
        corpus.make("mlp-onnx", tmp_path / "no" / "m.onnx")
    assert (
        str(e.value) == f"{tmp_path / 'no' / 'm.onnx'}: directory {tmp_path / 'no'} does not exist"
    )
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_above_2gib_is_streamed_quickly_with_little_memory() -> None:
    # Written to /dev/shm where it exists (a disk makes this I/O-bound: ~9 s on a busy
    # 2-core machine vs ~2 s in memory); removed at once.
    base = "/dev/shm" if shutil.disk_usage("/dev/shm").free > (6 << 30) else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        g = corpus.make("mlp-onnx-ext64k", Path(tmp) / "big.onnx", size_bytes=2200 << 20)
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        assert g.weight_bytes > 2**31
        assert grown_kib < 256 << 10  # far below the 2.1 GiB of weights
        m = inspect_model(g.files[0])
        assert m.weight_bytes == g.weight_bytes and m.files[1].size_bytes > 2**31
        assert all(t.offset_bytes % 65536 == 0 for t in m.tensors if t.file == str(g.files[1]))
        last = m.tensors[-1] if m.tensors[-1].file == str(g.files[1]) else None
        with open(g.files[1], "rb") as f:  # the end of the file holds weights, not zeros
            f.seek(m.files[1].size_bytes - 4096)
            assert len(set(f.read(4096))) > 200
        del last
