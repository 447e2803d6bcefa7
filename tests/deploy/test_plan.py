"""publish-plan: every warning exactly at its threshold, objects from the CVMFS chunker."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from cvmfs_modelio.chunks.layouts import ChunkSpec, compute_layout
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.deploy import plan as P
from cvmfs_modelio.deploy.bundlespec import BundleSpec, parse_spec, spec_name
from cvmfs_modelio.models import corpus
from cvmfs_modelio.models.inspect import inspect_model
from tests.conftest import CMS_MODELS

MIB = 1 << 20


def fp(size: int, chunked: bool = False, objects: list[int] | None = None) -> P.FilePlan:
    return P.FilePlan(
        "/m.onnx.data", "/x", size, "companion", "onnx", None, chunked, objects or [size]
    )


def codes(ws: list[P.PlanWarning]) -> list[str]:
    return sorted(w.code for w in ws)


@pytest.mark.parametrize(
    ("size", "want"),
    [
        (P.FILE_MBYTE_LIMIT_BYTES, []),
        (P.FILE_MBYTE_LIMIT_BYTES + 1, [P.W_MBYTE_LIMIT]),
        (P.DISCOURAGED_BYTES, [P.W_MBYTE_LIMIT]),
        (P.DISCOURAGED_BYTES + 1, [P.W_DISCOURAGED, P.W_MBYTE_LIMIT]),
    ],
)
def test_size_limits_fire_one_byte_above(size: int, want: list[str]) -> None:
    # chunked into objects below every squid limit: only the file-size thresholds apply
    params = P.PlanParams(squid_max_object=1 << 40)
    assert (
        codes(
            P.size_warnings(fp(size, chunked=True, objects=[size // 2, size - size // 2]), params)
        )
        == want
    )


def test_quota_half_is_the_largest_cacheable_unchunked_object() -> None:
    params = P.PlanParams(quota_mb=10, squid_max_object=1 << 40)
    half = 10 * MIB // 2
    assert codes(P.size_warnings(fp(half), params)) == []
    w = P.size_warnings(fp(half + 1), params)
    assert codes(w) == [P.W_QUOTA]
    assert f"({params.quota_mb} MB / 2 = {half} bytes)" in w[0].message
    # a chunked file of the same size is fine: its objects are cached one by one
    assert codes(P.size_warnings(fp(half + 1, chunked=True, objects=[half, 1]), params)) == []


def test_squid_limit_counts_objects_above_it() -> None:
    params = P.PlanParams(squid_max_object=4 * MIB)
    f = fp(12 * MIB + 1, chunked=True, objects=[4 * MIB, 4 * MIB + 1, 4 * MIB])
    f.compressed_sizes = None
    w = P.size_warnings(f, params)
    assert codes(w) == [P.W_SQUID]
    assert w[0].message.startswith(
        "1 of 3 objects are larger (uncompressed, largest 4194305 bytes)"
    )
    # with compressed sizes known, those count (what squid stores)
    f.compressed_sizes = [4 * MIB, 4 * MIB, 100]
    assert P.size_warnings(f, params) == []


def test_unaligned_external_data_and_missing_bundle(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "m").mkdir(parents=True)
    corpus.make("mlp-onnx-ext", root / "m" / "model.onnx", size_bytes=2 * MIB)
    (root / "README").write_text("not a model\n")
    pl = P.make_plan(root, P.PlanParams(min_size=1 * MIB, avg_size=2 * MIB, max_size=4 * MIB))
    kinds = {f.path: f.kind for f in pl.files}
    assert kinds == {
        "/README": "other",
        "/m/model.onnx": "model",
        "/m/model.onnx.data": "companion",
    }
    model = next(f for f in pl.files if f.path == "/m/model.onnx")
    assert codes(model.warnings) == [P.W_NO_BUNDLE, P.W_UNALIGNED]
    assert pl.bundles == {"/m/.cvmfsbundle-model.onnx": BundleSpec(("/m/model.onnx.data",))}
    assert pl.dirtab == ["/m"]
    # objects are exactly the CVMFS chunker's, compressed sizes exactly zlib level 6
    data = next(f for f in pl.files if f.path == "/m/model.onnx.data")
    lay = compute_layout(data.abspath, ChunkSpec(min_size=MIB, avg_size=2 * MIB, max_size=4 * MIB))
    assert data.object_sizes == [int(s) for s in lay.sizes]
    assert data.chunked == (lay.n_chunks > 1)
    raw = Path(data.abspath).read_bytes()
    assert data.compressed_sizes == [
        len(zlib.compress(raw[int(o) : int(o) + int(s)], 6))
        for o, s in zip(lay.offsets, lay.sizes, strict=True)
    ]
    assert "CVMFS_PREFETCH_FILEBUNDLES=yes" in pl.client_conf
    assert pl.server_conf == [
        "CVMFS_USE_FILE_CHUNKING=true",
        "CVMFS_MIN_CHUNK_SIZE=1048576",
        "CVMFS_AVG_CHUNK_SIZE=2097152",
        "CVMFS_MAX_CHUNK_SIZE=4194304",
    ]


def test_aligned_model_with_its_bundle_has_no_model_warnings(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    corpus.make("mlp-onnx-ext4k", root / "model.onnx", size_bytes=2 * MIB)
    (root / spec_name("model.onnx")).write_text(BundleSpec(("model.onnx.data",)).to_json_text())
    pl = P.make_plan(root, P.PlanParams(squid_max_object=1 << 30))
    assert pl.warnings == []
    # a spec that misses the companion is named
    (root / spec_name("model.onnx")).write_text(BundleSpec(("/other",)).to_json_text())
    w = P.make_plan(root, P.PlanParams(squid_max_object=1 << 30)).warnings
    assert [(x.code, x.message) for x in w] == [
        (P.W_NO_BUNDLE, "bundle spec /.cvmfsbundle-model.onnx does not list /model.onnx.data")
    ]


def test_embedded_weights_warn_above_the_chunking_threshold(tmp_path: Path) -> None:
    corpus.make("mlp-onnx", tmp_path / "e.onnx", size_bytes=2 * MIB)
    weights = inspect_model(tmp_path / "e.onnx").files[0].weight_bytes

    def plan_codes(min_size: int) -> list[str]:
        params = P.PlanParams(
            min_size=min_size,
            avg_size=min_size + 1,
            max_size=min_size + 2,
            compressed_sizes=False,
            squid_max_object=1 << 30,
        )
        return codes(P.make_plan(tmp_path, params).warnings)

    assert plan_codes(weights) == []
    assert plan_codes(weights - 1) == [P.W_EMBEDDED]


def test_bad_bundle_spec_is_a_warning_naming_it(tmp_path: Path) -> None:
    corpus.make("mlp-onnx-ext4k", tmp_path / "model.onnx", size_bytes=2 * MIB)
    (tmp_path / spec_name("model.onnx")).write_text("{not json")
    w = [x for x in P.make_plan(tmp_path).warnings if x.code == P.W_BAD_BUNDLE]
    assert len(w) == 1 and "bundle spec is not JSON (Expecting property name" in w[0].message


def test_spec_format_round_trip_and_relative_entries() -> None:
    text = BundleSpec(("/a/b.data",)).to_json_text()
    assert json.loads(text) == {
        "name": "CVMFS_BUNDLE",
        "version": "1.0.0",
        "encoding": "UTF-8",
        "dependencies": ["/a/b.data"],
    }
    assert parse_spec("#%CVMFS_BUNDLE version=1\n" + text, "x").dependencies == ("/a/b.data",)
    rel = '{"dependencies": ["./x.data", "y", "/abs"]}'
    assert parse_spec(rel, "s", "/dir").dependencies == ("/dir/x.data", "/dir/y", "/abs")
    with pytest.raises(UsageError, match=r"^s: bundle spec has no 'dependencies' list of paths$"):
        parse_spec('{"dependencies": "x"}', "s")


def test_cli_on_the_cms_models(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvmfs_modelio.cli",
            "publish-plan",
            str(CMS_MODELS),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "# warnings: none" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["schema"] == {"name": "cvmfs-modelio.publish-plan", "version": 1}
    files = doc["plans"][0]["files"]
    models = [f for f in files if f["kind"] == "model"]
    assert len(models) == 9 and all(not f["chunked"] and f["n_objects"] == 1 for f in models)
    bad = subprocess.run(
        [sys.executable, "-m", "cvmfs_modelio.cli", "publish-plan", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert (bad.returncode, bad.stderr) == (
        2,
        f"cvmfs-modelio: {tmp_path / 'nope'}: no such file or directory\n",
    )
