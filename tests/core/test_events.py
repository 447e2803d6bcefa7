from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio import _native
from cvmfs_modelio.core.events import (
    EVENT_DTYPE,
    EventFileError,
    EventLog,
    FileEntry,
    empty_events,
    parse_event_bytes,
    read_event_file,
    write_event_file,
)


def test_native_layout_matches_dtype() -> None:
    from cvmfs_modelio.core.events import check_native_layout

    check_native_layout()
    assert _native.EVENT_SIZE == 80
    assert EVENT_DTYPE.itemsize == 80


def test_empty_events_defaults() -> None:
    ev = empty_events(3)
    assert ev["offset"].tolist() == [-1, -1, -1]
    assert ev["file_id"].tolist() == [-1, -1, -1]
    assert ev["length"].tolist() == [0, 0, 0]


int64 = st.integers(-(2**63), 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def logs(draw: st.DrawFn) -> EventLog:
    n = draw(st.integers(0, 20))
    ev = empty_events(n)
    for name in ("t_start_ns", "duration_ns", "offset", "length", "result", "aux"):
        ev[name] = draw(st.lists(int64, min_size=n, max_size=n))
    for name in ("pid", "tid", "file_id", "fd", "err", "minflt", "majflt"):
        ev[name] = draw(st.lists(int32, min_size=n, max_size=n))
    ev["op"] = draw(st.lists(st.integers(0, 65535), min_size=n, max_size=n))
    files = {
        i: FileEntry(i, draw(st.text(min_size=1, max_size=30)), draw(int64), 7, 9)
        for i in range(draw(st.integers(0, 3)))
    }
    meta = draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
    return EventLog(ev, files, meta)


@settings(max_examples=50, deadline=None)
@given(logs())
def test_event_file_round_trip(tmp_path_factory: pytest.TempPathFactory, log: EventLog) -> None:
    path = tmp_path_factory.mktemp("ev") / "t.cmio"
    write_event_file(path, log)
    back = read_event_file(path)
    assert back.events.tobytes() == log.events.tobytes()
    assert back.files == log.files
    assert back.meta == log.meta
    assert not list(path.parent.glob(".*tmp*")), "temporary file left behind"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parser_on_hostile_bytes(data: bytes) -> None:
    try:
        log = parse_event_bytes(data, "x")
    except EventFileError as e:
        assert str(e).startswith("x: ")
        assert "\n" not in str(e)
    else:
        assert log.events.dtype == EVENT_DTYPE


def test_truncated_file_is_one_line_error(tmp_path: Path) -> None:
    ev = empty_events(4)
    write_event_file(tmp_path / "a", EventLog(ev, {}, {"k": 1}))
    raw = (tmp_path / "a").read_bytes()
    for cut in (3, 30, len(raw) - 1):
        with pytest.raises(EventFileError, match=r"^cut: truncated"):
            parse_event_bytes(raw[:cut], "cut")
    assert np.array_equal(parse_event_bytes(raw, "ok").events, ev)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EventFileError, match=r"/nope: no such file or directory$"):
        read_event_file(tmp_path / "nope")
