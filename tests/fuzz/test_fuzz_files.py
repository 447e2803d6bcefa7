"""Fuzz targets: the tool's own file formats read back from hostile bytes.

Manifests, CVMFS chunk-list xattrs, event files and trace directories, campaign TOML and
results stores.  Each case starts from a valid file and changes it structurally (hostile
field values with the checksum recomputed, truncations, byte flips, huge lengths, wrong
types), so that the reader's checks past the framing are reached.  Each: a value, or one
line (UsageError / EventFileError) that names the file; never another exception.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from hypothesis import given
from hypothesis import strategies as st

from cvmfs_modelio.campaign.spec import parse_campaign
from cvmfs_modelio.chunks.layouts import layout_from_xattrs
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.events import (
    EventFileError,
    EventLog,
    FileEntry,
    empty_events,
    parse_event_bytes,
    write_event_file,
)
from cvmfs_modelio.sim.store import parse_manifest
from cvmfs_modelio.stats.costmodel import CostParams
from cvmfs_modelio.stats.results import load_results
from cvmfs_modelio.stats.synthetic import SynthModel, make_store
from cvmfs_modelio.trace.tracer import read_trace
from tests.conftest import ROOT
from tests.fuzz._budget import fuzz

HOSTILE_TEXT = st.sampled_from(
    ["", "-1", "0", "1e999", "nan", "9" * 40, "x\x00y", "../../etc/passwd", "é", " 12 ", "0x10"]
)


def one_line(e: Exception, name: str) -> None:
    msg = str(e)
    assert "\n" not in msg and msg.startswith(name), msg


def flips(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` truncated, or with a few bytes replaced, or with bytes inserted."""
    b = bytearray(data)
    how = draw(st.sampled_from(["truncate", "flip", "insert"]))
    if how == "truncate" or not b:
        return bytes(b[: draw(st.integers(0, len(b)))])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(b) - 1))
        if how == "flip":
            b[i] = draw(st.integers(0, 255))
        else:
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(b)


# ---------------------------------------------------------------- manifest

MANIFEST_FIELDS = {"C": "ab" * 20, "B": "1234", "S": "3", "N": "sim.cvmfs.io", "D": "240", "T": "0"}


@fuzz(300)
@given(st.data())
def test_fuzz_manifest(data: st.DataObject) -> None:
    fields = dict(MANIFEST_FIELDS)
    for k in data.draw(st.sets(st.sampled_from([*fields, "X"]), max_size=3), label="edited"):
        v = data.draw(HOSTILE_TEXT | st.text(max_size=50), label=k)
        if v == "" and data.draw(st.booleans()):
            fields.pop(k, None)
        else:
            fields[k] = v
    body = "".join(f"{k}{v}\n" for k, v in fields.items()).encode("utf-8", "surrogatepass")
    raw = body + b"--\n" + hashlib.sha1(body).hexdigest().encode() + b"\n"
    if data.draw(st.booleans()):
        raw = flips(raw, data.draw)
    try:
        m = parse_manifest(raw, "store/.cvmfspublished")
    except UsageError as e:
        one_line(e, "store/.cvmfspublished")
        return
    assert len(m.catalog_hash) == 40 and int(m.catalog_hash, 16) >= 0
    assert m.catalog_size >= 0 and m.revision >= 0, m  # a negative size or revision is refused


# ---------------------------------------------------------------- chunk lists (CVMFS xattrs)

HASH = "0123456789abcdef0123456789abcdef01234567"


@st.composite
def chunk_pages(draw: st.DrawFn) -> dict[str, str | bytes]:
    sizes = draw(st.lists(st.integers(1, 1 << 24), min_size=1, max_size=6))
    rows, off = [], 0
    for s in sizes:
        rows.append([HASH + draw(st.sampled_from(["", "P"])), str(off), str(s)])
        off += s
    for _ in range(draw(st.integers(0, 3))):  # hostile edits of single cells
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.integers(0, 2))
        rows[r][c] = draw(HOSTILE_TEXT | st.integers(-5, 1 << 64).map(str))
    npages = draw(st.integers(1, 3))
    per = max(1, -(-len(rows) // npages))
    pages = [rows[i : i + per] for i in range(0, len(rows), per)]
    attrs: dict[str, str | bytes] = {
        "user.chunk_list~?": draw(
            st.sampled_from(
                [f"num_pages, {len(pages)}", "num_pages, 0", "num_pages, 99999999", "x"]
            )
        )
    }
    for i, page in enumerate(pages):
        text = "hash,offset,size\n" + "".join(",".join(r) + "\n" for r in page)
        attrs[f"user.chunk_list~{i}"] = draw(
            st.sampled_from([text, text.encode(), text.encode("latin-1", "replace") + b"\xff"])
        )
    attrs["user.chunks"] = draw(st.sampled_from([str(len(rows)), "-1", "abc"]))
    return attrs


@fuzz(300)
@given(chunk_pages())
def test_fuzz_chunk_list_xattrs(attrs: dict[str, str | bytes]) -> None:
    try:
        lay = layout_from_xattrs(attrs, "/cvmfs/x/model.onnx")
    except UsageError as e:
        one_line(e, "/cvmfs/x/model.onnx")
        return
    offsets = np.asarray(lay.offsets)
    sizes = np.asarray(lay.sizes)
    assert offsets[0] == 0 and np.all(offsets[1:] == offsets[:-1] + sizes[:-1])
    assert np.all(sizes > 0) or (len(sizes) == 1 and sizes[0] == 0)  # an empty file: one chunk


# ---------------------------------------------------------------- event files and traces


def _event_file(tmp: Path) -> bytes:
    ev = empty_events(5)
    ev["t_start_ns"] = np.arange(5) * 1000
    ev["length"] = 4096
    ev["file_id"] = [0, 1, 0, 1, 0]
    log = EventLog(ev, {0: FileEntry(0, "/m/a.onnx", 100), 1: FileEntry(1, "/m/b", 7)}, {"k": 1})
    write_event_file(tmp / "e.events", log)
    return (tmp / "e.events").read_bytes()


@st.composite
def event_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    b = bytearray(valid)
    how = draw(st.sampled_from(["bytes", "header", "frame"]))
    if how == "header":  # hostile magic/version/record size/metadata length
        field = draw(st.sampled_from([(4, "I"), (8, "I"), (12, "I")]))
        struct.pack_into(
            "<" + field[1], b, field[0], draw(st.sampled_from([0, 1, 80, 2**31, 2**32 - 1]))
        )
        return bytes(b)
    if how == "frame":  # a frame header claiming a huge or odd length
        extra = struct.pack(
            "<II", draw(st.integers(0, 5)), draw(st.sampled_from([0, 7, 80, 2**31, 2**32 - 1]))
        )
        return bytes(b) + extra + draw(st.binary(max_size=100))
    return flips(bytes(b), draw)


@fuzz(300)
@given(st.data())
def test_fuzz_event_files(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    valid = _VALID.setdefault("ev", _event_file(tmp_path_factory.mktemp("ev")))
    raw = data.draw(event_bytes(valid), label="file")
    try:
        log = parse_event_bytes(raw, "trace/1.events")
    except EventFileError as e:
        one_line(e, "trace/1.events")
        return
    assert log.events.dtype.itemsize == 80


_VALID: dict[str, bytes] = {}


@fuzz(40)
@given(st.data())
def test_fuzz_trace_directory(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A trace directory whose files are damaged: read_trace gives one line naming the file."""
    valid = _VALID.setdefault("ev", _event_file(tmp_path_factory.mktemp("ev")))
    d = tmp_path_factory.mktemp("trace")
    n = data.draw(st.integers(1, 3), label="files")
    bad = data.draw(st.integers(0, n - 1), label="damaged")
    for i in range(n):
        raw = data.draw(event_bytes(valid), label=f"file{i}") if i == bad else valid
        (d / f"{1000 + i}.events").write_bytes(raw)
    try:
        log = read_trace(d)
    except (EventFileError, UsageError) as e:
        one_line(e, str(d))
        return
    assert len(log.events) >= 5 * (n - 1)


# ---------------------------------------------------------------- campaign TOML

QUICK = tomllib.loads((ROOT / "bench" / "campaigns" / "quick.toml").read_text())
HOSTILE_VALUE = st.one_of(
    HOSTILE_TEXT,
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(HOSTILE_TEXT | st.integers(-5, 5), max_size=3),
    st.just({"nested": {"deep": [1, "x"]}}),
    st.sampled_from(["4MB", "0", "1MiB/0/4MiB", "whole", "/etc/passwd", "cold,warm", "ort;rm -rf"]),
)


def _toml(doc: dict[str, Any]) -> str:
    """A TOML writer for the generated documents (tomllib reads only)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            if v != v:
                return "nan"
            if v in (float("inf"), float("-inf")):
                return "inf" if v > 0 else "-inf"
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"

    out = []
    for section, body in doc.items():
        if isinstance(body, list):
            for item in body:
                out.append(f"[[{section}]]")
                out += [f"{json.dumps(k)} = {value(v)}" for k, v in item.items()]
        elif isinstance(body, dict):
            out.append(f"[{section}]")
            out += [f"{json.dumps(k)} = {value(v)}" for k, v in body.items()]
        else:
            out.insert(0, f"{json.dumps(section)} = {value(body)}")
    return "\n".join(out) + "\n"


@fuzz(300)
@given(st.data())
def test_fuzz_campaign_toml(data: st.DataObject) -> None:
    doc = json.loads(json.dumps(QUICK))
    sections = ["campaign", "models", "target", "matrix"]
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        sec = data.draw(st.sampled_from([*sections, "unknown"]), label="section")
        body = doc.setdefault(sec, {}) if sec != "models" else doc["models"][0]
        if not isinstance(body, dict):
            continue
        how = data.draw(st.sampled_from(["set", "drop", "new"]), label="how")
        keys = list(body)
        if how == "drop" and keys:
            body.pop(data.draw(st.sampled_from(keys)))
        elif how == "set" and keys:
            body[data.draw(st.sampled_from(keys))] = data.draw(HOSTILE_VALUE)
        else:
            body[data.draw(st.sampled_from(["extra", "reps", "kind", "path", "seed"]))] = data.draw(
                HOSTILE_VALUE
            )
    text = _toml(doc)
    try:
        spec = parse_campaign(text, Path("/tmp/campaigns/c.toml"))
    except UsageError as e:
        one_line(e, "/tmp/campaigns/c.toml")
        return
    assert spec is not None


def test_fuzz_campaign_toml_writer_round_trips() -> None:
    assert tomllib.loads(_toml(QUICK)) == QUICK


# ---------------------------------------------------------------- results stores


@pytest.fixture(scope="module")
def results_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("results")
    params = CostParams(per_object_ns=1e6, rtt_factor=1.0, link_factor=1.0, cpu_ns_per_byte=1.0)
    return make_store(
        base / "store",
        params,
        [SynthModel("a", 1 << 20)],
        [(False, 0, 0, 0), (True, 256 << 10, 512 << 10, 1 << 20)],
        [(2_000_000, 0)],
        reps=1,
    )


@fuzz(60)
@given(st.data())
def test_fuzz_results_store(
    results_store: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("rs") / "store"
    shutil.copytree(results_store, d)
    files = sorted(p for p in d.rglob("*") if p.is_file())
    victim = data.draw(st.sampled_from(files), label="file")
    how = data.draw(st.sampled_from(["bytes", "json", "remove", "dir"]), label="how")
    if how == "remove":
        victim.unlink()
    elif how == "dir":
        victim.unlink()
        victim.mkdir()
    elif how == "json" and victim.name == "store.json":
        meta = json.loads(victim.read_text())
        key = data.draw(st.sampled_from(["schema", "campaign", "nothing"]))
        meta[key] = data.draw(HOSTILE_VALUE)
        victim.write_text(json.dumps(meta))
    else:
        victim.write_bytes(flips(victim.read_bytes(), data.draw))
    try:
        res = load_results(d)
    except UsageError as e:
        one_line(e, str(d))
        return
    assert len(res.measurements.columns) > 0
