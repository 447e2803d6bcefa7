"""Exact tensor maps of the real models in ../shared, checked against independent readers."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.inspect import ModelMap, inspect_model
from tests.models.conftest import FORMATS, MINILM, MODELS, need

CMS = MODELS / "cms"


def _bytes(path: str, off: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def _onnx_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant-node tensors, subgraphs (If/Loop bodies) included."""
    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                out[a.t.name or f"{node.output[0]}:{a.name}"] = a.t
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                out.update(_onnx_tensors(g))
    return out


def _varints(b: bytes) -> list[int]:
    out, v, shift = [], 0, 0
    for byte in b:
        v |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            out.append(v)
            v, shift = 0, 0
    return out


def test_every_cms_onnx_tensor_is_where_onnx_says(cms_models: list[Path]) -> None:
    for path in cms_models:
        m = inspect_model(path)
        model = onnx.load(str(path))
        ref = _onnx_tensors(model.graph)
        assert m.format == "onnx"
        assert {t.name for t in m.tensors} == set(ref), path
        data = path.read_bytes()
        for t in m.tensors:
            r = ref[t.name]
            assert t.shape == tuple(r.dims)
            assert t.dtype == onnx.helper.tensor_dtype_to_np_dtype(r.data_type).name
            got = data[t.offset_bytes : t.end_bytes]
            if r.HasField("raw_data"):
                assert got == r.raw_data
            elif len(r.int64_data) or len(r.int32_data):  # packed varints
                vals = _varints(got)
                assert vals == [v % (1 << 64) for v in (*r.int64_data, *r.int32_data)]
            else:  # packed float_data etc.: the little-endian payload decodes to the values
                np.testing.assert_array_equal(
                    np.frombuffer(got, dtype=t.dtype), numpy_helper.to_array(r).ravel()
                )
        assert m.files[0].size_bytes == len(data)
        assert m.files[0].weight_bytes == sum(t.length_bytes for t in m.tensors)


def test_minilm_safetensors_matches_safe_open() -> None:
    from safetensors import safe_open

    path = need(MINILM / "model.safetensors")
    m = inspect_model(path)
    assert m.format == "safetensors" and len(m.tensors) == 104
    assert m.files[0].size_bytes == 90868376
    assert m.files[0].weight_bytes == 90856960  # the data section tiles exactly
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    with safe_open(str(path), "np") as f:
        assert set(f.keys()) == {t.name for t in m.tensors}
        for t in m.tensors:
            ref = f.get_tensor(t.name)
            got = raw[t.offset_bytes : t.end_bytes].view(t.dtype).reshape(t.shape)
            assert ref.dtype == got.dtype and ref.shape == t.shape
            np.testing.assert_array_equal(ref, got)
    first = m.tensors[0]
    assert (first.name, first.offset_bytes, first.alignment) == (
        "embeddings.position_ids",  # int64 first: safetensors orders by dtype alignment
        8 + 11408,
        8,
    )


def test_keras_h5_offsets_read_back_what_h5py_reads() -> None:
    import h5py

    path = need(FORMATS / "DeepDoubleX/102X/V02/BvL.h5")
    m = inspect_model(path)
    assert m.format == "keras-h5"
    assert (len(m.tensors), m.weight_bytes, m.files[0].size_bytes) == (117, 689940, 806752)
    with h5py.File(path, "r") as h:
        for t in m.tensors:
            ref = h[t.name][()]
            got = np.frombuffer(_bytes(str(path), t.offset_bytes, t.length_bytes), t.dtype)
            np.testing.assert_array_equal(got.reshape(ref.shape), ref)
            assert t.shape == ref.shape


def test_torchscript_zip_map() -> None:
    path = need(FORMATS / "models/particlenet_AK4_PT/1/model.pt")
    m = inspect_model(path)
    assert m.format == "torch-zip" and len(m.tensors) == 104 and not m.notes
    by = {t.name: t for t in m.tensors}
    w = by["pf_conv.conv.1.weight"]
    assert (w.dtype, w.shape, w.offset_bytes, w.length_bytes) == (
        "float32",
        (32, 20, 1),
        1024,
        2560,
    )
    nbt = by["pf_conv.conv.0.num_batches_tracked"]
    assert (nbt.dtype, nbt.shape, nbt.length_bytes) == ("int64", (), 8)
    assert int(np.frombuffer(_bytes(str(path), nbt.offset_bytes, 8), "<i8")[0]) >= 0
    assert all(t.alignment >= 64 for t in m.tensors)  # PyTorch aligns storages to 64 bytes
    assert m.weight_bytes == 942104
    digest = hashlib.sha256(
        b"".join(_bytes(str(path), t.offset_bytes, t.length_bytes) for t in m.tensors)
    ).hexdigest()
    # Every data/N entry of the archive, in order, is exactly one tensor's storage.
    import zipfile

    with zipfile.ZipFile(path) as z:
        entries = [i for i in z.infolist() if "/data/" in i.filename]
        stored = b"".join(z.read(i) for i in sorted(entries, key=lambda i: i.header_offset))
    assert hashlib.sha256(stored).hexdigest() == digest


def test_torchscript_zip_matches_torch_if_installed() -> None:
    torch = pytest.importorskip("torch")
    path = need(FORMATS / "models/particlenet_AK4_PT/1/model.pt")
    m = inspect_model(path)
    sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    assert set(sd) == {t.name for t in m.tensors}
    for t in m.tensors:
        got = np.frombuffer(_bytes(str(path), t.offset_bytes, t.length_bytes), t.dtype)
        np.testing.assert_array_equal(got.reshape(t.shape), sd[t.name].numpy())


def _crc32c(data: bytes) -> int:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_tf_checkpoint_map_and_crc() -> None:
    from cvmfs_modelio.models.formats import _protowire as pw
    from cvmfs_modelio.models.formats import tf_checkpoint as tc

    index = need(FORMATS / "DeepFlavourV01_C/variables/variables.index")
    data = index.with_name("variables.data-00000-of-00001")
    m = inspect_model(index)
    assert m.format == "tf-checkpoint" and len(m.tensors) == 330
    assert [Path(f.path).name for f in m.files] == [index.name, data.name]
    # The tensors tile the data shard exactly, in offset order.
    pos = 0
    for t in m.tensors:
        assert t.file == str(data) and t.offset_bytes == pos
        pos = t.end_bytes
    assert pos == data.stat().st_size == m.files[1].weight_bytes
    # Independent check: each entry's crc32c (TensorFlow stores it masked) of its bytes.
    buf = index.read_bytes()
    crcs = {}
    for key, (vs, ve) in tc.read_index(buf):
        for f in pw.fields(buf, vs, ve):
            if f.number == 6 and f.wire_type == pw.I32:
                crcs[key.decode()] = int.from_bytes(buf[f.value : f.end], "little")
    raw = data.read_bytes()
    small = [t for t in m.tensors if t.length_bytes <= 4096][:40]
    assert len(small) == 40
    for t in small:
        c = _crc32c(raw[t.offset_bytes : t.end_bytes])
        masked = (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
        assert crcs[t.name] == masked, t.name
    assert inspect_model(data).tensors == m.tensors  # the shard maps through its index
    assert inspect_model(index.parent).tensors == m.tensors  # and the directory too


def test_mxnet_params_map() -> None:
    path = need(FORMATS / "DeepBoostedJet/V01/full/resnet-0000.params")
    m = inspect_model(path)
    assert m.format == "mxnet-params" and len(m.tensors) == 127
    assert all(t.name.startswith(("arg:", "aux:")) for t in m.tensors)
    first = m.tensors[0]
    assert (first.shape, first.dtype, first.offset_bytes, first.length_bytes) == (
        (32,),
        "float32",
        56,
        128,
    )
    # Arrays follow each other with a 40-byte header for a 1-D array (magic, storage type,
    # ndim, dims, context, type flag): the layout leaves no byte unexplained.
    for a, b in zip(m.tensors, m.tensors[1:], strict=False):
        assert b.offset_bytes - a.end_bytes == 4 + 4 + 4 + 8 * len(b.shape) + 4 + 4 + 4
    assert m.weight_bytes == 1824084


def test_tf_graphdef_constants() -> None:
    path = need(FORMATS / "DeepDoubleX/94X/V01/DDB.pb")
    m = inspect_model(path)
    assert m.format == "tf-graphdef" and len(m.tensors) == 218
    content = [t for t in m.tensors if t.length_bytes >= 64]
    for t in content:  # tensor_content holds exactly numel * itemsize bytes
        assert t.length_bytes == int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize, t.name
    assert m.weight_bytes == 162493


def test_non_models_in_shared_are_refused_in_one_line() -> None:
    cases = {
        MINILM / "vocab.txt": "text, not a model",
        MINILM / "config.json": "JSON text, not a model (a graph or config file?)",
        FORMATS / "DeepBoostedJet/V01/full/resnet-symbol.json": "JSON text, not a model (a "
        "graph or config file?)",
    }
    for path, reason in cases.items():
        with pytest.raises(UsageError) as e:
            inspect_model(need(path))
        assert str(e.value) == f"{path}: {reason}"


EXPECTED_FORMATS = {
    ".onnx": "onnx",
    ".safetensors": "safetensors",
    ".h5": "keras-h5",
    ".pt": "torch-zip",
    ".params": "mxnet-params",
    ".pb": "tf-graphdef",
    ".index": "tf-checkpoint",
}


def test_inspect_runs_on_every_file_of_shared_models() -> None:
    files = sorted(p for p in need(MODELS).rglob("*") if p.is_file())
    assert len(files) > 25
    seen = set()
    for p in files:
        want = EXPECTED_FORMATS.get(p.suffix)
        if p.name.startswith("variables.data-"):
            want = "tf-checkpoint"
        if want is None:
            with pytest.raises(UsageError) as e:
                inspect_model(p)
            msg = str(e.value)
            assert msg.startswith(f"{p}: ") and "\n" not in msg
            continue
        m = inspect_model(p)
        assert m.format == want, p
        assert m.tensors and 0 < m.weight_bytes <= m.size_bytes
        seen.add(m.format)
        j = m.to_json()
        assert j["weight_bytes"] == m.weight_bytes and len(j["tensors"]) == len(m.tensors)
    assert seen == set(EXPECTED_FORMATS.values())


def weight_compress_ratio(m: ModelMap, limit: int = 8 << 20) -> float:
    """zlib level 6 (as CVMFS) size / raw size over the float32 tensors >= 4 KiB of ``m``."""
    raw = comp = 0
    for t in m.tensors:
        if t.dtype != "float32" or t.length_bytes < 4096 or raw >= limit:
            continue
        b = _bytes(t.file, t.offset_bytes, min(t.length_bytes, limit - raw))
        raw += len(b)
        comp += len(zlib.compress(b, 6))
    return comp / raw


def test_compressibility_of_real_weights_is_what_the_corpus_imitates() -> None:
    # Trained float32 weights hardly compress (0.93 for every CMS model here); the synthetic
    # generator is held to the same band in test_corpus.
    m = inspect_model(need(CMS / "RobustParTAK4/PUPPI/V00/nominal/RobustParTAK4.onnx"))
    assert 0.91 < weight_compress_ratio(m) < 0.95
