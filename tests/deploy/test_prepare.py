"""prepare: offsets aligned, tensors byte-identical, ONNX Runtime outputs identical, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.events import (
    EventLog,
    FileEntry,
    Op,
    Source,
    empty_events,
    write_event_file,
)
from cvmfs_modelio.deploy.prepare import PrepareOptions, prepare, run_outputs
from cvmfs_modelio.models import corpus
from cvmfs_modelio.models.inspect import ModelMap, inspect_model
from tests.conftest import CMS_MODELS

MIB = 1 << 20
CMS = sorted(CMS_MODELS.rglob("*.onnx"))


def tensor_bytes(m: ModelMap) -> dict[str, bytes]:
    out = {}
    for t in m.tensors:
        with open(t.file, "rb") as f:
            f.seek(t.offset_bytes)
            out[t.name] = f.read(t.length_bytes)
    return out


def arrays(path: Path) -> dict[str, bytes]:
    """Every initializer's value (dtype, shape, bytes), however it is stored."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return {
        t.name: (lambda a: (a.dtype.str, a.shape, a.tobytes()))(numpy_helper.to_array(t))
        for t in m.graph.initializer
    }


def external(m: ModelMap) -> list:
    return [t for t in m.tensors if t.file.endswith(".data")]


@pytest.mark.parametrize("model", CMS, ids=[str(p.relative_to(CMS_MODELS)) for p in CMS])
def test_cms_models_round_trip_with_identical_outputs(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = prepare(model, out, PrepareOptions(external_data=True, align=4096, verify=False))
    assert res.data == out / (model.name + ".data")
    assert run_outputs(res.model) == run_outputs(model)
    new = inspect_model(res.model)
    ext = external(new)
    assert ext and all(t.offset_bytes % 4096 == 0 for t in ext)
    # every tensor holds exactly the value it held before; external ones as raw bytes
    assert arrays(res.model) == arrays(model)
    new_raw = tensor_bytes(new)
    names = {t.name for t in ext}
    assert {n: new_raw[n] for n in names} == {n: arrays(model)[n][2] for n in names}
    assert sorted(os.listdir(out)) == sorted([model.name, model.name + ".data"])


@pytest.mark.parametrize("align", [0, 4096, 65536])
def test_synthetic_external_model_realigned(align: int, tmp_path: Path) -> None:
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    corpus.make("decoder-onnx-ext", src, size_bytes=4 * MIB, seed=3)
    res = prepare(src, tmp_path / "out", PrepareOptions(align=align))
    assert res.outputs_compared == 1
    new = inspect_model(res.model)
    offs = [t.offset_bytes for t in external(new)]
    if align:
        assert all(o % align == 0 for o in offs)
        # padding only: each tensor starts at the first multiple after the previous end
        ends = [t.end_bytes for t in external(new)]
        assert offs[1:] == [-(-e // align) * align for e in ends[:-1]]
    else:
        assert offs[1:] == [t.end_bytes for t in external(new)][:-1]
    assert tensor_bytes(new) == tensor_bytes(inspect_model(src))


def test_embedded_minilm_externalized_with_bundle(tmp_path: Path) -> None:
    src = tmp_path / "minilm.onnx"
    corpus.make("minilm-onnx", src)
    out = tmp_path / "out"
    res = prepare(
        src, out, PrepareOptions(external_data=True, align=65536, bundle=True, repo_dir="/ml/v1")
    )
    assert res.outputs_compared == 3
    assert json.loads((out / ".cvmfsbundle-minilm.onnx").read_text()) == {
        "name": "CVMFS_BUNDLE",
        "version": "1.0.0",
        "encoding": "UTF-8",
        "dependencies": ["/ml/v1/minilm.onnx.data"],
    }
    new = inspect_model(res.model)
    assert all(t.offset_bytes % 65536 == 0 for t in external(new))
    assert tensor_bytes(new) == tensor_bytes(inspect_model(src))


def _trace_touching(path: Path, file: Path, ranges: list[tuple[int, int]]) -> None:
    ev = empty_events(len(ranges))
    ev["source"] = int(Source.PRELOAD)
    ev["op"] = int(Op.PREAD)
    ev["file_id"] = 0
    ev["t_start_ns"] = np.arange(len(ranges)) * 1000
    ev["offset"] = [o for o, _ in ranges]
    ev["length"] = [n for _, n in ranges]
    write_event_file(
        path, EventLog(ev, {0: FileEntry(0, f"/cvmfs/x/{file.name}", file.stat().st_size)})
    )


def test_load_order_puts_the_first_touched_tensor_at_offset_0(tmp_path: Path) -> None:
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    corpus.make("decoder-onnx-ext", src, size_bytes=4 * MIB, seed=1)
    before = external(inspect_model(src))
    last, mid = before[-1], before[len(before) // 2]
    trace = tmp_path / "t.events"
    # the recorded load (on a mount: matched by file name) touched the last, then a middle one
    _trace_touching(
        trace, Path(last.file), [(last.offset_bytes + 8, 16), (mid.offset_bytes, mid.length_bytes)]
    )
    res = prepare(src, tmp_path / "out", PrepareOptions(order_trace=trace, align=4096))
    after = external(inspect_model(res.model))
    assert [t.name for t in after][:2] == [last.name, mid.name]
    assert after[0].offset_bytes == 0
    rest = [t.name for t in before if t.name not in (last.name, mid.name)]
    assert [t.name for t in after][2:] == rest
    assert res.outputs_compared == 1
    with pytest.raises(UsageError, match="touches none of the model's files"):
        other = tmp_path / "o.events"
        _trace_touching(other, tmp_path / "t.events", [(0, 1)])
        prepare(src, tmp_path / "out2", PrepareOptions(order_trace=other))
    assert not (tmp_path / "out2").exists()


def test_refusals(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    corpus.make("mlp-onnx-ext", src, size_bytes=1 * MIB)
    with pytest.raises(
        UsageError, match=r"is the model's own directory \(prepare never overwrites"
    ):
        prepare(src, tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(UsageError, match=r"busy: not empty \(prepare writes a fresh directory\)$"):
        prepare(src, busy)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(UsageError, match=r"junk.onnx: ONNX Runtime cannot load it: \S"):
        prepare(junk, tmp_path / "o1")
    assert not (tmp_path / "o1").exists()
    # --bundle without companions fails after writing: nothing may be left in OUT
    with pytest.raises(UsageError, match=r"^--bundle: the model has no companion files"):
        emb = tmp_path / "emb.onnx"
        corpus.make("mlp-onnx", emb, size_bytes=1 * MIB)
        prepare(emb, tmp_path / "o2", PrepareOptions(bundle=True))
    assert not (tmp_path / "o2").exists()
    empty = tmp_path / "o3"
    empty.mkdir()
    with pytest.raises(UsageError):
        prepare(emb, empty, PrepareOptions(bundle=True))
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_external_data_outside_the_model_dir_is_refused(tmp_path: Path) -> None:
    import onnx

    d = tmp_path / "d"
    d.mkdir()
    src = d / "m.onnx"
    corpus.make("mlp-onnx-ext", src, size_bytes=1 * MIB)
    os.rename(d / "m.onnx.data", tmp_path / "evil.data")
    m = onnx.load(str(src), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../evil.data"
    src.write_bytes(m.SerializeToString())
    m2 = onnx.load(str(src), load_external_data=False)
    name = next(t.name for t in m2.graph.initializer if t.external_data)
    with pytest.raises(UsageError) as ei:
        prepare(src, tmp_path / "out", PrepareOptions(verify=False))
    assert str(ei.value) == (
        f"{src}: tensor {name!r}: external data location '../evil.data' is outside the "
        "model's directory (refused)"
    )
    assert not (tmp_path / "out").exists()


def test_cli_one_line_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = tmp_path / "m.onnx"
    corpus.make("mlp-onnx-ext", src, size_bytes=1 * MIB)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cvmfs_modelio.cli", "prepare", *args],
            capture_output=True,
            text=True,
        )

    r = cli(str(src), str(tmp_path / "o"), "--align", "3000")
    assert (r.returncode, r.stderr) == (
        2,
        "cvmfs-modelio: --align: 3000 is not a power of two (4KiB or 64KiB)\n",
    )
    r = cli(str(src), str(tmp_path / "o"), "--order", "foo")
    assert r.returncode == 2 and r.stderr == (
        "cvmfs-modelio: --order: 'foo' is not trace:TRACE (a tracer output)\n"
    )
    r = cli(str(src), str(tmp_path / "o"), "--external-data", "--align", "64KiB", "--bundle")
    assert r.returncode == 0, r.stderr
    assert "ONNX Runtime: 1 output(s) bit-identical to" in r.stdout
    assert sorted(os.listdir(tmp_path / "o")) == [".cvmfsbundle-m.onnx", "m.onnx", "m.onnx.data"]
    assert not (tmp_path / "o2").exists()
