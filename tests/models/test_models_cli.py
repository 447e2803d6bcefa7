"""``cvmfs-modelio inspect`` and ``models``: tables, JSON, and one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvmfs_modelio.cli import main
from tests.models.conftest import MINILM, need


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_inspect_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(
        [
            "models",
            "make",
            "mlp-onnx-ext4k",
            str(tmp_path / "m.onnx"),
            "--size",
            "2MiB",
            "--seed",
            "4",
        ],
        capsys,
    )
    assert rc == 0 and err == ""
    assert out.splitlines()[0] == "mlp-onnx-ext4k: 1.8 MiB of weights (1899912 bytes)"
    rc, out, err = _run(["inspect", str(tmp_path / "m.onnx"), "--tensors", "2"], capsys)
    lines = out.splitlines()
    assert rc == 0 and err == ""
    assert lines[0] == (
        f"{tmp_path / 'm.onnx'}: onnx, 18 tensors, 1.8 MiB of weights in 1.8 MiB (98.5%)"
    )
    assert lines[5] == (
        "alignment: tensors >= 4 KiB start at multiples of 4.0 KiB at least; weight bytes "
        "4 KiB-aligned 100.0%, 64 KiB-aligned 13.9%"
    )
    assert lines[6] == "tensors (2 largest of 18, in file order; offsets and lengths in bytes):"
    assert len(lines) == 11 and lines[-1].startswith("fc0.weight ")
    rc, out, _ = _run(["inspect", str(tmp_path / "m.onnx.data"), "--json", "-"], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["schema"] == {"name": "cvmfs-modelio.inspect", "version": 1}
    assert doc["model"]["format"] == "onnx" and len(doc["model"]["tensors"]) == 18
    assert doc["model"]["path"] == str(tmp_path / "m.onnx")  # the .data maps via its model
    # All but the 40-byte output bias (embedded in the .onnx) sit on 4 KiB boundaries.
    assert 0.9999 < doc["alignment"]["aligned_4k_share"] < 1.0
    assert "environment" in doc


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    cases = [
        (["inspect", str(tmp_path / "nope.onnx")], f"{tmp_path / 'nope.onnx'}: no such file"),
        (["inspect", str(tmp_path / "notes.txt")], f"{tmp_path / 'notes.txt'}: text, not a model"),
        (["inspect", str(tmp_path)], f"{tmp_path}: is a directory (give the model file)"),
        (
            ["inspect", str(tmp_path / "notes.txt"), "--json", str(tmp_path / "no" / "x.json")],
            f"{tmp_path / 'no' / 'x.json'}: directory {tmp_path / 'no'} does not exist",
        ),
        (
            ["models", "make", "mlp-onnx", str(tmp_path / "m.onnx"), "--size", "ten"],
            "--size: cannot parse size 'ten' (use e.g. 4KiB, 4M, 4194304)",
        ),
        (
            ["models", "make", "mlp-onnx", str(tmp_path / "m.onnx"), "--size", "0"],
            "--size: must be positive, got 0",
        ),
        (
            ["models", "make", "minilm-onnx", str(tmp_path / "m.onnx"), "--size", "1MiB"],
            "--size: the minilm kind has fixed weights (all-MiniLM-L6-v2)",
        ),
        (
            ["models", "make", "mlp-onnx", str(tmp_path / "m.onnx"), "--size", "3GiB"],
            f"{tmp_path / 'm.onnx'}: 3159984520 bytes of weights cannot be embedded (protobuf "
            "limit 2 GiB); use an external-data form",
        ),
        (["models", "survey"], "survey: give PATHs, --corpus-size, or both"),
        (
            ["models", "survey", str(tmp_path / "gone")],
            f"{tmp_path / 'gone'}: no such file or directory",
        ),
    ]
    for argv, msg in cases:
        rc, _out, err = _run(argv, capsys)
        assert (rc, err) == (2, f"cvmfs-modelio: {msg}\n"), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_models_list_and_minilm_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["models", "list"], capsys)
    assert rc == 0 and len(out.split()) == 18 and "decoder-onnx-ext64k" in out.split()
    need(MINILM / "model.safetensors")
    rc, out, _ = _run(
        [
            "models",
            "make",
            "minilm-onnx",
            str(tmp_path / "mini.onnx"),
            "--json",
            str(tmp_path / "mini.json"),
        ],
        capsys,
    )
    assert rc == 0
    check = out.splitlines()[-1]
    assert check.startswith("numeric check vs numpy forward on 21 tokens (")
    doc = json.loads((tmp_path / "mini.json").read_text())
    assert max(doc["numeric_check"]["max_abs_diff"].values()) < 1e-5


def test_survey_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = need(MINILM)
    md = tmp_path / "t.md"
    rc, out, _ = _run(["models", "survey", str(src), "--markdown", str(md)], capsys)
    assert rc == 0 and md.read_text() == out
    rows = [ln for ln in out.splitlines() if ln.startswith("| `minilm/")]
    assert rows[0].startswith("| `minilm/model.safetensors` | safetensors | 1 | 86.7 MiB | 100% ")
    assert "| `minilm/vocab.txt` | text, not a model |" in out
