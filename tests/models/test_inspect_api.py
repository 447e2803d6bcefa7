"""ModelMap: the overlap query, alignment and shares, on hand-made spans."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.inspect import TensorSpan, alignment_of, build_map


def test_alignment() -> None:
    assert [alignment_of(o) for o in (0, 1, 6, 4096, 12288, 3 << 20, 1 << 40)] == [
        1 << 20,
        1,
        2,
        4096,
        4096,
        1 << 20,
        1 << 20,
    ]
    t = TensorSpan("w", "float32", (4,), "/f", 65536 * 3, 16)
    assert t.alignment == 65536 and t.end_bytes == 65536 * 3 + 16


spans = st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 600)), max_size=30)


@settings(max_examples=150, deadline=None)
@given(spans, st.integers(0, 6000), st.integers(0, 800))
def test_tensors_in_equals_a_linear_scan(
    tmp_path_factory: pytest.TempPathFactory, raw: list[tuple[int, int]], off: int, n: int
) -> None:
    f = tmp_path_factory.getbasetemp() / "blob"
    if not f.exists():
        f.write_bytes(bytes(6000))
    ts = [TensorSpan(f"t{i}", "uint8", (ln,), str(f), o, ln) for i, (o, ln) in enumerate(raw)]
    m = build_map("test", f, [f], ts, allow_overlap=True)
    want = sorted(
        (t for t in ts if n and t.length_bytes and t.offset_bytes < off + n and t.end_bytes > off),
        key=lambda t: (t.offset_bytes, t.length_bytes, t.name),
    )
    got = m.tensors_in(str(f), off, n)
    assert sorted(got, key=lambda t: (t.offset_bytes, t.length_bytes, t.name)) == want
    covered = set()
    for t in ts:
        covered.update(range(t.offset_bytes, t.end_bytes))
    assert m.files[0].weight_bytes == len(covered)
    assert m.files[0].metadata_bytes == 6000 - len(covered)


def test_build_map_refuses_spans_outside_and_overlaps(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(bytes(100))
    with pytest.raises(UsageError) as e:
        build_map("x", f, [f], [TensorSpan("a", "uint8", (10,), str(f), 95, 10)])
    assert str(e.value) == f"{f}: tensor 'a' at offset 95 length 10 lies outside {f} (100 bytes)"
    with pytest.raises(UsageError) as e:
        build_map(
            "x",
            f,
            [f],
            [
                TensorSpan("a", "uint8", (10,), str(f), 0, 10),
                TensorSpan("b", "uint8", (10,), str(f), 5, 10),
            ],
        )
    assert str(e.value) == f"{f}: tensors 'a' and 'b' overlap in {f} (bytes 5..10)"
    m = build_map("x", f, [f], [TensorSpan("a", "uint8", (10,), str(f), 10, 10)])
    assert m.to_json()["tensors"][0] == {
        "name": "a",
        "dtype": "uint8",
        "shape": [10],
        "file": str(f),
        "offset_bytes": 10,
        "length_bytes": 10,
        "alignment_bytes": 2,
    }
    assert m.tensors_in(str(f), 0, 10) == [] and m.tensors_in(str(f), 19, 1) == [m.tensors[0]]
    assert m.tensors_in("/elsewhere", 0, 100) == []
