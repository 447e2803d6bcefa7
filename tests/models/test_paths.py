"""resolve_inside: the one containment check for paths a model file names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.paths import resolve_inside


def test_plain_and_nested_names_resolve_inside(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert resolve_inside(tmp_path, "m.onnx.data") == tmp_path.resolve() / "m.onnx.data"
    assert resolve_inside(tmp_path, "sub/w.bin") == tmp_path.resolve() / "sub" / "w.bin"
    assert resolve_inside(tmp_path, "./sub/./w.bin") == tmp_path.resolve() / "sub" / "w.bin"
    (tmp_path / "link").symlink_to(tmp_path / "sub")  # a symlink that stays inside is fine
    assert resolve_inside(tmp_path, "link/w.bin") == tmp_path.resolve() / "sub" / "w.bin"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("/etc/passwd", "file location '/etc/passwd' is absolute (must be relative)"),
        ("../../etc/passwd", "file location '../../etc/passwd' contains '..'"),
        ("a/../../x", "file location 'a/../../x' contains '..'"),
        ("a\\..\\..\\x", "file location 'a\\\\..\\\\..\\\\x' contains '..'"),
        ("C:/x", "file location 'C:/x' is absolute (must be relative)"),
        ("", "empty file location"),
        ("a\0b", "file location 'a\\x00b' contains a NUL byte"),
        (".", "file location '.' names the model's directory"),
    ],
)
def test_hostile_locations_are_refused_naming_them(
    tmp_path: Path, location: str, reason: str
) -> None:
    with pytest.raises(UsageError) as e:
        resolve_inside(tmp_path, location, what="model.onnx")
    assert str(e.value) == f"model.onnx: {reason}"


def test_symlinks_out_of_the_directory_are_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "secret").write_text("x")
    (model_dir / "w.data").symlink_to(tmp_path / "secret")
    (model_dir / "d").symlink_to(tmp_path)
    (model_dir / "abs").symlink_to("/etc")
    for loc, target in (
        ("w.data", tmp_path / "secret"),
        ("d/secret", tmp_path / "secret"),
        ("abs/passwd", Path("/etc/passwd").resolve()),
    ):
        with pytest.raises(UsageError) as e:
            resolve_inside(model_dir, loc)
        assert str(e.value) == (
            f"file location {loc!r} resolves to {target}, outside {model_dir.resolve()}"
        )


_PARTS = st.sampled_from(["a", "b", "/", ".", "..", "\\", "~", "%2e", " ", "link", "out"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_PARTS, max_size=8).map("".join))
def test_no_location_ever_escapes(tmp_path_factory: pytest.TempPathFactory, loc: str) -> None:
    base = tmp_path_factory.getbasetemp() / "contain"
    if not base.exists():
        base.mkdir()
        (base / "link").symlink_to("..")
        (base / "out").symlink_to("/")
    try:
        p = resolve_inside(base, loc)
    except UsageError as e:
        assert "\n" not in str(e)
        return
    assert os.path.commonpath([p, base.resolve()]) == str(base.resolve()) and p != base.resolve()
