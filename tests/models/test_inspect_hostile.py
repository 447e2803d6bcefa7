"""Hostile model files for every reader: a correct map or one line naming the file, never a
crash, a hang, or an allocation sized by an untrusted length.

Each hypothesis target builds structurally plausible files (valid framing with hostile
values, truncations and byte flips of real or generated models), not only random bytes.
Budgets are bounded (``max_examples``) so all of them together stay well under a minute.
"""

from __future__ import annotations

import io
import itertools
import json
import pickle
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models import corpus
from cvmfs_modelio.models.inspect import ModelMap, inspect_model
from tests.fuzz._budget import fuzz
from tests.models.conftest import FORMATS, MINILM, MODELS, need

# the fuzz budget and seed of tests/fuzz (CMIO_FUZZ_SEED / CMIO_FUZZ_SCALE replay and extend)
FUZZ = fuzz(60)


def outcome(path: Path, shown: Path | None = None) -> ModelMap | None:
    """inspect_model(path): a map that stays inside its files, or one line naming the file."""
    try:
        m = inspect_model(path)
    except UsageError as e:
        msg = str(e)
        assert "\n" not in msg
        assert msg.startswith(f"{shown or path}"), msg
        return None
    sizes = {f.path: f.size_bytes for f in m.files}
    for t in m.tensors:
        assert 0 <= t.offset_bytes <= t.end_bytes <= sizes[t.file]
    return m


def _error(path: Path) -> str:
    with pytest.raises(UsageError) as e:
        inspect_model(path)
    return str(e.value)


# ---------------------------------------------------------------- safetensors


def _st(header: dict[str, Any] | bytes, data: bytes, length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def test_safetensors_hostile_headers(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    ok = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    cases = {
        _st(ok, bytes(8), length=1 << 62): "header length 4611686018427387904 is larger than "
        "the file (",
        _st(b"{not json", b""): "header is not JSON (JSONDecodeError)",
        _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, bytes(8)): (
            "tensor 'a': data_offsets [0, 16] lie outside the 8-byte data section"
        ),
        _st(
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            bytes(12),
        ): "tensor 'b' overlaps the tensor before it",
        _st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)): (
            "tensor 'a': 8 bytes for F32 shape [3] (needs 12)"
        ),
        _st({"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)): (
            "tensor 'a': unknown dtype 'Q9'"
        ),
        _st({"a": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}}, bytes(8)): (
            "tensor 'a': negative dimension in shape (-1, 2)"
        ),
        _st({"a": {"dtype": "F32", "shape": [1 << 40] * 3, "data_offsets": [0, 8]}}, bytes(8)): (
            "tensor 'a': shape (1099511627776, 1099511627776, 1099511627776) is impossibly large"
        ),
    }
    for blob, reason in cases.items():
        p.write_bytes(blob)
        assert _error(p).startswith(f"{p}: not a valid safetensors file: {reason}"), blob[:40]


st_dtypes = st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "F8_E4M3", "X1", 7])
st_entry = st.fixed_dictionaries(
    {
        "dtype": st_dtypes,
        "shape": st.lists(st.integers(-2, 40), max_size=3) | st.just("x"),
        "data_offsets": st.lists(st.integers(-8, 400), min_size=2, max_size=2)
        | st.lists(st.integers(0, 400), max_size=3),
    }
)


@FUZZ
@given(
    st.dictionaries(st.text(max_size=8), st_entry, max_size=6),
    st.integers(0, 400),
    st.one_of(st.none(), st.integers(0, 1 << 64 - 1)),
)
def test_fuzz_safetensors(
    tmp_path: Path, header: dict[str, Any], n: int, length: int | None
) -> None:
    p = tmp_path / "f.safetensors"
    p.write_bytes(_st(header, bytes(n), length=length))
    m = outcome(p)
    if m is not None:  # a valid file: tensors disjoint and each exactly its dtype x shape
        ends = sorted((t.offset_bytes, t.end_bytes) for t in m.tensors if t.length_bytes)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends))


# ---------------------------------------------------------------- ONNX


def _small_onnx(tmp: Path, form: str = "onnx") -> Path:
    g = corpus.make(f"mlp-{form}", tmp / "m.onnx", size_bytes=600 << 10, seed=1)
    return g.files[0]


def test_onnx_external_data_outside_the_directory_is_refused(tmp_path: Path) -> None:
    model = onnx.load(str(_small_onnx(tmp_path, "onnx-ext")), load_external_data=False)
    (tmp_path / "sub").mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(1 << 20))
    (tmp_path / "sub" / "link.data").symlink_to(secret)
    cases = {
        "/etc/passwd": "file location '/etc/passwd' is absolute (must be relative)",
        "../secret.bin": "file location '../secret.bin' contains '..'",
        "link.data": f"file location 'link.data' resolves to {secret}, outside "
        f"{(tmp_path / 'sub').resolve()}",
    }
    for loc, reason in cases.items():
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = loc
        p = tmp_path / "sub" / "evil.onnx"
        onnx.save(model, str(p))
        name = next(t.name for t in model.graph.initializer if t.external_data)
        assert _error(p) == f"{p}: tensor {name!r}: {reason}"


def test_onnx_missing_or_short_external_data(tmp_path: Path) -> None:
    p = _small_onnx(tmp_path, "onnx-ext")
    data = p.with_name(p.name + ".data")
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size - 1)
    msg = _error(p)
    assert msg.startswith(f"{p}: tensor 'fc_out.weight' at offset ") and msg.endswith(
        f"lies outside {data} ({size - 1} bytes)"
    )
    data.unlink()
    assert _error(p) == (
        f"{p}: external data file 'm.onnx.data' of tensor 'input_mean' is missing ({data})"
    )


def test_onnx_truncated_and_foreign(tmp_path: Path) -> None:
    src = _small_onnx(tmp_path).read_bytes()
    p = tmp_path / "t.onnx"
    p.write_bytes(src[: len(src) // 2])
    assert _error(p).startswith(f"{p}: not a readable ONNX model (")
    p.write_bytes(b"\x08\x07" + b"\xff" * 20)
    assert _error(p).startswith(f"{p}: not a readable ONNX model (")


@FUZZ
@given(st.data())
def test_fuzz_onnx_mutations(tmp_path: Path, data: st.DataObject) -> None:
    base = tmp_path / "base.onnx"
    if not base.exists():
        g = corpus.make("decoder-onnx", base, size_bytes=200 << 10, seed=2)
        assert g.files[0] == base
    raw = bytearray(base.read_bytes())
    mode = data.draw(st.sampled_from(["truncate", "flip", "length"]))
    if mode == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif mode == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    else:  # a varint length somewhere made huge: claims past the end must be refused
        at = data.draw(st.integers(0, len(raw) - 11))
        raw[at : at + 10] = bytes([0xFF] * 9 + [0x01])
    p = tmp_path / "f.onnx"
    p.write_bytes(bytes(raw))
    outcome(p)


@FUZZ
@given(
    st.sampled_from(["w.data", "/etc/passwd", "../w.data", "a/../w.data", "w.data\0x", "", "."]),
    st.integers(-5, 1 << 40) | st.just("x"),
    st.integers(-5, 1 << 40) | st.none(),
)
def test_fuzz_onnx_external_fields(tmp_path: Path, loc: str, off: Any, length: Any) -> None:
    (tmp_path / "w.data").write_bytes(bytes(4096))
    t = onnx.TensorProto(name="w", dims=[16], data_type=onnx.TensorProto.FLOAT)
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", loc), ("offset", off), ("length", length)):
        if v is not None:
            e = t.external_data.add()
            e.key, e.value = k, str(v)
    g = onnx.helper.make_graph([], "g", [], [], initializer=[t])
    p = tmp_path / "f.onnx"
    p.write_bytes(onnx.helper.make_model(g).SerializeToString())
    m = outcome(p)
    if m is not None:
        assert m.tensors[0].file == str((tmp_path / "w.data").resolve())


# ---------------------------------------------------------------- GGUF


def _gguf(path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_tensor("tok", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("norm", np.ones((48,), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_matches_the_gguf_package(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    p = tmp_path / "m.gguf"
    _gguf(p)
    m = inspect_model(p)
    r = gguf.GGUFReader(str(p))
    assert m.format == "gguf"
    assert [(t.name, t.offset_bytes, t.length_bytes, t.shape) for t in m.tensors] == [
        (t.name, int(t.data_offset), int(t.n_bytes), tuple(int(d) for d in reversed(t.shape)))
        for t in r.tensors
    ]
    from cvmfs_modelio.models.formats.gguf import GGML_TYPES

    for code, (_name, block, nbytes) in GGML_TYPES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(code)] == (block, nbytes)


def test_gguf_hostile_counts(tmp_path: Path) -> None:
    p = tmp_path / "m.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0))
    assert _error(p) == (
        f"{p}: not a valid GGUF file: tensor infos at byte 24 needs "
        f"{24 * (1 << 60)} bytes, 0 remain"
    )
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 62))
    assert _error(p).startswith(f"{p}: not a valid GGUF file: metadata at byte 24 needs 13 bytes")
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    assert _error(p) == f"{p}: not a valid GGUF file: version 1 not supported (2 and 3 are)"


@FUZZ
@given(st.data())
def test_fuzz_gguf(tmp_path: Path, data: st.DataObject) -> None:
    base = tmp_path / "base.gguf"
    if not base.exists():
        _gguf(base)
    raw = bytearray(base.read_bytes())
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    else:  # overwrite one little-endian count/length/offset field with a hostile value
        at = data.draw(st.integers(4, 400))
        val = data.draw(st.sampled_from([0, 1, 7, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))
        raw[at : at + 8] = struct.pack("<Q", val)
    p = tmp_path / "f.gguf"
    p.write_bytes(bytes(raw))
    outcome(p)


# ---------------------------------------------------------------- PyTorch zip


class _Storage:
    pass


def _torch_zip(path: Path, names: list[str], pkl: bytes, storages: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        for k, v in storages.items():
            z.writestr(f"archive/data/{k}", v)
        for n in names:
            z.writestr(n, b"x")


def _rebuild_pickle(
    key: str, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
) -> bytes:
    """The opcodes torch.save writes for {'w': tensor}, assembled by hand (no torch)."""
    out = io.BytesIO()
    out.write(b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01")
    out.write(b"ctorch._utils\n_rebuild_tensor_v2\nq\x02(")
    key_b = key.encode()
    out.write(b"(X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X")
    out.write(struct.pack("<I", len(key_b)) + key_b)
    out.write(b"X\x03\x00\x00\x00cpuK\x04tQ")
    out.write(pickle.dumps(offset, 2)[2:-1])
    out.write(pickle.dumps(shape, 2)[2:-1])
    out.write(pickle.dumps(stride, 2)[2:-1])
    out.write(b"\x89ccollections\nOrderedDict\n)RtRs.")
    return out.getvalue()


def test_torch_zip_hand_made_tensor(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    _torch_zip(p, [], _rebuild_pickle("0", 1, (2, 2), (2, 1)), {"0": bytes(range(20))})
    m = inspect_model(p)
    (t,) = m.tensors
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("archive/data/0")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    assert (t.name, t.dtype, t.shape, t.offset_bytes, t.length_bytes) == (
        "w",
        "float32",
        (2, 2),
        start + 4,
        16,
    )


def test_torch_zip_hostile(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    good = _rebuild_pickle("0", 0, (2,), (1,))
    _torch_zip(p, ["archive/../../etc/cron.d/x"], good, {"0": bytes(8)})
    assert _error(p) == (
        f"{p}: not a readable PyTorch archive (entry name 'archive/../../etc/cron.d/x' is "
        "unsafe (absolute or '..'))"
    )
    _torch_zip(p, ["/abs"], good, {"0": bytes(8)})
    assert "entry name '/abs' is unsafe" in _error(p)
    _torch_zip(p, [], _rebuild_pickle("0", 3, (2,), (1,)), {"0": bytes(8)})
    assert _error(p) == (
        f"{p}: not a readable PyTorch archive (tensor 'w': elements 3..5 of a 8-byte storage)"
    )
    _torch_zip(p, [], _rebuild_pickle("9", 0, (2,), (1,)), {"0": bytes(8)})
    assert _error(p) == (
        f"{p}: not a readable PyTorch archive (tensor 'w': storage '9' is not in the archive)"
    )
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/version", b"3")
    assert _error(p) == (
        f"{p}: not a readable PyTorch archive (no data.pkl: not a PyTorch or TorchScript archive)"
    )
    p.write_bytes(good[:10] + b"PK\x03\x04")
    assert _error(p).startswith(f"{p}: ")


def test_torch_pickle_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"x": _Exec(f"open({str(marker)!r}, 'w').write('1')")}, 2)
    p = tmp_path / "m.pt"
    _torch_zip(p, [], evil, {"0": bytes(8)})
    m = inspect_model(p)
    assert not marker.exists()
    assert [t.name for t in m.tensors] == ["data/0"]  # an unnamed storage, listed as such
    assert m.notes == ("storage '0' is named by no tensor of data.pkl",)


class _Exec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (self.code,))


@FUZZ
@given(st.data())
def test_fuzz_torch_zip(tmp_path: Path, data: st.DataObject) -> None:
    pkl = bytearray(_rebuild_pickle("0", data.draw(st.integers(-1, 8)), (2, 2), (2, 1)))
    for _ in range(data.draw(st.integers(0, 4))):
        pkl[data.draw(st.integers(0, len(pkl) - 1))] = data.draw(st.integers(0, 255))
    names = data.draw(
        st.lists(
            st.sampled_from(["archive/version", "../x", "a/b", "archive/data/1", "c\\..\\d"]),
            max_size=3,
            unique=True,
        )
    )
    p = tmp_path / "f.pt"
    _torch_zip(p, names, bytes(pkl), {"0": bytes(data.draw(st.integers(0, 32)))})
    if data.draw(st.booleans()):
        raw = p.read_bytes()
        p.write_bytes(raw[: data.draw(st.integers(0, len(raw)))])
    outcome(p)


# ---------------------------------------------------------------- HDF5, TF, MXNet, ORT


def _mutate(src: bytes, data: st.DataObject, region: int | None = None) -> bytes:
    raw = bytearray(src)
    if data.draw(st.booleans()):
        return bytes(raw[: data.draw(st.integers(0, len(raw)))])
    hi = min(len(raw), region or len(raw)) - 1
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, hi))] = data.draw(st.integers(0, 255))
    return bytes(raw)


@FUZZ
@given(st.data())
def test_fuzz_keras_h5(tmp_path: Path, data: st.DataObject) -> None:
    src = need(FORMATS / "DeepDoubleX/102X/V02/BvL.h5").read_bytes()
    p = tmp_path / "f.h5"
    p.write_bytes(_mutate(src, data, region=64 << 10))  # metadata lives in the first pages
    outcome(p)


def test_truncated_h5_is_one_line(tmp_path: Path) -> None:
    src = need(FORMATS / "DeepDoubleX/102X/V02/BvL.h5").read_bytes()
    p = tmp_path / "t.h5"
    p.write_bytes(src[:4096])
    assert _error(p).startswith(f"{p}: not a readable HDF5 file (")


@FUZZ
@given(st.data())
def test_fuzz_tf_checkpoint_index(tmp_path: Path, data: st.DataObject) -> None:
    d = need(FORMATS / "DeepFlavourV01_C/variables")
    shard = tmp_path / "variables.data-00000-of-00001"
    if not shard.exists():
        shutil.copy(d / shard.name, shard)
    p = tmp_path / "variables.index"
    p.write_bytes(_mutate((d / "variables.index").read_bytes(), data))
    outcome(p)


def test_tf_checkpoint_missing_shard(tmp_path: Path) -> None:
    d = need(FORMATS / "DeepFlavourV01_C/variables")
    p = tmp_path / "variables.index"
    shutil.copy(d / "variables.index", p)
    assert _error(p) == (
        f"{p}: data shard variables.data-00000-of-00001 is missing "
        f"({tmp_path.resolve() / 'variables.data-00000-of-00001'})"
    )


def _mxnet(arrays: list[tuple[int, tuple[int, ...]]], names: list[bytes]) -> bytes:
    out = struct.pack("<QQQ", 0x112, 0, len(arrays))
    for flag, shape in arrays:
        out += struct.pack("<IiI", 0xF993FAC9, 0, len(shape)) + struct.pack(
            f"<{len(shape)}q", *shape
        )
        out += struct.pack("<iii", 1, 0, flag) + bytes(4 * int(np.prod(shape)))
    out += struct.pack("<Q", len(names)) + b"".join(struct.pack("<Q", len(n)) + n for n in names)
    return out


def test_mxnet_hand_made_and_hostile(tmp_path: Path) -> None:
    p = tmp_path / "m.params"
    p.write_bytes(_mxnet([(0, (2, 3)), (4, (5,))], [b"arg:w", b"aux:m"]))
    m = inspect_model(p)
    assert [(t.name, t.dtype, t.shape, t.offset_bytes, t.length_bytes) for t in m.tensors] == [
        ("arg:w", "float32", (2, 3), 24 + 12 + 16 + 12, 24),
        ("aux:m", "int32", (5,), 24 + 12 + 16 + 12 + 24 + 12 + 8 + 12, 20),
    ]
    p.write_bytes(struct.pack("<QQQ", 0x112, 0, 1 << 61))
    assert _error(p) == (
        f"{p}: not a valid MXNet params file: arrays at byte 24 needs {24 << 61} bytes, 0 remain"
    )
    p.write_bytes(_mxnet([(0, (1 << 40, 1 << 40))], [b"w"])[:200])
    assert _error(p).endswith("array 0: shape (1099511627776, 1099511627776) is impossibly large")
    p.write_bytes(_mxnet([(0, (1 << 20,))], [b"w"])[:200])
    assert _error(p) == (
        f"{p}: not a valid MXNet params file: array 0 data at byte 56 needs 4194304 bytes, "
        "144 remain"
    )


@FUZZ
@given(st.data())
def test_fuzz_mxnet(tmp_path: Path, data: st.DataObject) -> None:
    src = need(FORMATS / "DeepBoostedJet/V01/full/resnet-0000.params").read_bytes()[:20000]
    p = tmp_path / "f.params"
    p.write_bytes(_mutate(src, data))
    outcome(p)


@FUZZ
@given(st.data())
def test_fuzz_ort(tmp_path: Path, data: st.DataObject) -> None:
    base = tmp_path / "base.ort"
    if not base.exists():
        corpus.make("decoder-ort", base, size_bytes=200 << 10, seed=3)
    p = tmp_path / "f.ort"
    p.write_bytes(_mutate(base.read_bytes(), data))
    outcome(p)


@FUZZ
@given(st.data())
def test_fuzz_tf_graphdef(tmp_path: Path, data: st.DataObject) -> None:
    src = need(FORMATS / "DeepDoubleX/94X/V01/DDB.pb").read_bytes()
    p = tmp_path / "f.pb"
    p.write_bytes(_mutate(src, data))
    outcome(p)


def test_not_a_model_and_unsupported(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    for blob, reason in {
        b"": "empty file, not a model",
        pickle.dumps({"a": 1}): "a Python pickle (e.g. a legacy torch.save file): not read, "
        "unpickling runs arbitrary code",
        b"\x1f\x8b\x08\x00rest": "gzip-compressed data: unpack it first",
        bytes(range(256)) * 4: "not a model in a known format (onnx, ort, safetensors, gguf, "
        "torch-zip, keras-h5, tf-checkpoint, tf-graphdef, mxnet-params)",
    }.items():
        p.write_bytes(blob)
        assert _error(p) == f"{p}: {reason}"
    assert _error(tmp_path / "none") == f"{tmp_path / 'none'}: no such file"
    assert _error(tmp_path) == f"{tmp_path}: is a directory (give the model file)"


def test_every_shared_model_survives_truncation(tmp_path: Path) -> None:
    files = [
        p
        for p in need(MODELS).rglob("*")
        if p.suffix in {".onnx", ".pt", ".params", ".pb", ".h5", ".safetensors"}
        and p.stat().st_size < (8 << 20)
    ]
    files.append(MINILM / "model.safetensors")
    for src in files:
        raw = src.read_bytes()
        for frac in (0.1, 0.5, 0.999):
            p = tmp_path / f"t{src.suffix}"
            p.write_bytes(raw[: int(len(raw) * frac)])
            outcome(p)
