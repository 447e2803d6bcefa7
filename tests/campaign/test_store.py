"""The results store and the cells: keys, pending work, atomic parts, locks, task merges."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmfs_modelio.campaign.cells import Cell, cell_key, expand, pending, series
from cvmfs_modelio.campaign.experiments import ChunkConfig
from cvmfs_modelio.campaign.spec import parse_campaign
from cvmfs_modelio.campaign.store import (
    MEASUREMENT_COLUMNS,
    SCHEMAS,
    ResultBatch,
    ResultsStore,
)
from cvmfs_modelio.core.errors import UsageError

MiB = 1 << 20
CAMPAIGN = """
[campaign]
name = "t"
reps = 2
[[models]]
kind = "synthetic"
size = "4MiB"
width = 512
[[models]]
kind = "synthetic"
size = "4MiB"
width = 512
external_data = true
[matrix]
chunking = ["1MiB/2MiB/4MiB", "whole"]
rtt_ms = [0, 10]
cache = ["hot", "cold", "warm"]
loader = ["ort", "ort-noprepack"]
"""


def default(t: pa.DataType) -> Any:
    return "" if t == pa.string() else False if t == pa.bool_() else 0.0 if t == pa.float64() else 0


def row(key: str, rep: int, ok: bool = True, **kw: Any) -> dict[str, Any]:
    r = {name: default(t) for name, t in MEASUREMENT_COLUMNS}
    r.update(measurement_id=str(uuid.uuid4()), cell_key=key, rep=rep, ok=ok, campaign="t")
    r["created_utc"] = kw.pop("created_utc", "2025-01-01T00:00:00+00:00")
    r.update(kw)
    return r


def fetch(mid: str, seq: int) -> dict[str, Any]:
    r = {
        name: default(t)
        for name, t in zip(SCHEMAS["fetches"].names, SCHEMAS["fetches"].types, strict=True)
    }
    r.update(measurement_id=mid, seq=seq, object=f"{seq:040x}", kind="chunk")
    return r


# ------------------------------------------------------------------ cells


def test_cell_keys_are_stable_sha1_of_the_canonical_parameters() -> None:
    cell = Cell(
        model="m",
        model_source='{"kind":"file","path":"/m.onnx"}',
        target="emulated",
        chunk=ChunkConfig.chunked(MiB, 2 * MiB, 4 * MiB),
        rtt_ns=10_000_000,
        bandwidth_bytes_per_s=100 * MiB,
        prefetch_depth=0,
        parallel_handles=16,
        client_profile="fast",
        cache_state="cold",
        loader="ort",
    )
    # The key must never change for the same parameters: stores and executors compare it.
    assert cell.key == cell_key(cell.params())
    assert cell.key == "c6167b5a789b0315fc7ce72a01ada8744b400017"
    assert Cell.from_json(json.loads(json.dumps(cell.to_json()))) == cell
    other = Cell(**{**cell.__dict__, "rtt_ns": 10_000_001})
    assert other.key != cell.key


def test_expand_is_the_full_product_in_setup_sharing_order() -> None:
    spec = parse_campaign(CAMPAIGN)
    cells = expand(spec)
    assert len(cells) == 2 * 2 * 2 * 3 * 2  # chunking x rtt x models x caches x loaders
    assert len({c.key for c in cells}) == len(cells)
    # publish groups are contiguous, and inside a series the states run cold, warm, hot
    labels = [c.chunk.label for c in cells]
    assert labels == sorted(labels, key=["1/2/4 MiB", "unchunked"].index)
    groups = series(pending(cells, spec.reps, []))
    assert len(groups) == 2 * 2 * 2 * 2
    for g in groups:
        assert [w.cell.cache_state for w in g] == ["cold", "warm", "hot"]
        assert len({w.cell.series_key for w in g}) == 1


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_pending_neither_repeats_nor_loses_a_repetition(data: st.DataObject) -> None:
    spec = parse_campaign(CAMPAIGN)
    cells = expand(spec)
    every = [(c.key, r) for c in cells for r in range(spec.reps)]
    done = data.draw(st.sets(st.sampled_from(every)))
    # a store may also hold rows of other campaigns or reps beyond the declared ones
    foreign = {("f" * 40, 0), (cells[0].key, spec.reps + 3)}
    work = pending(cells, spec.reps, done | foreign)
    todo = [(w.cell.key, r) for w in work for r in w.reps]
    assert len(todo) == len(set(todo))
    assert set(todo) == set(every) - done
    assert set(todo).isdisjoint(done)


# ------------------------------------------------------------------ store


def test_store_round_trip_and_pandas_reads_the_directory(tmp_path: Path) -> None:
    store = ResultsStore.create(tmp_path / "r", {"name": "t"})
    rows = [row("a" * 40, 0), row("a" * 40, 1, ok=False, error="loader ort: boom")]
    batch = ResultBatch(rows, [fetch(rows[0]["measurement_id"], i) for i in range(3)], [])
    name = store.append(batch)
    assert name is not None and name.startswith("part-") and name.endswith(".parquet")
    df = pd.read_parquet(tmp_path / "r" / "measurements")
    assert list(df.columns) == [n for n, _t in MEASUREMENT_COLUMNS]
    assert len(df) == 2 and df["ok"].tolist() == [True, False]
    assert len(pd.read_parquet(tmp_path / "r" / "fetches")) == 3
    assert store.done() == {("a" * 40, 0), ("a" * 40, 1)}
    assert store.done(retry_failed=True) == {("a" * 40, 0)}
    assert not (tmp_path / "r" / "accesses" / name).exists()  # no empty parts


def test_rows_must_have_exactly_the_schema(tmp_path: Path) -> None:
    store = ResultsStore.create(tmp_path / "r", {"name": "t"})
    bad = row("a" * 40, 0)
    del bad["wall_ns"]
    with pytest.raises(ValueError, match=r"missing \['wall_ns'\]"):
        store.append(ResultBatch([bad]))
    assert list((tmp_path / "r" / "measurements").iterdir()) == []


def test_interrupted_writes_are_invisible_and_cleaned(tmp_path: Path) -> None:
    store = ResultsStore.create(tmp_path / "r", {"name": "t"})
    ok = row("a" * 40, 0)
    store.append(ResultBatch([ok], [fetch(ok["measurement_id"], 0)]))
    # what a kill between the fetches part and the measurements part leaves behind
    orphan_row = row("b" * 40, 0)
    orphan = ResultBatch([orphan_row], [fetch(orphan_row["measurement_id"], 0)])
    store.append(orphan)
    parts = sorted((tmp_path / "r" / "measurements").iterdir())
    parts[-1].unlink()
    (tmp_path / "r" / "measurements" / ".part-x.parquet.tmp123").write_bytes(b"half")
    assert len(pd.read_parquet(tmp_path / "r" / "measurements")) == 1
    assert len(store.read("fetches")) == 1  # the orphan's fetches are not read
    assert store.fetches()["measurement_id"].tolist() == [ok["measurement_id"]]
    assert store.remove_orphans() == 2
    assert len(list((tmp_path / "r" / "fetches").iterdir())) == 1


def test_dedupe_prefers_ok_rows_then_the_latest(tmp_path: Path) -> None:
    store = ResultsStore.create(tmp_path / "r", {"name": "t"})
    store.append(ResultBatch([row("a" * 40, 0, ok=False, created_utc="2025-01-01")]))
    store.append(ResultBatch([row("a" * 40, 0, ok=True, created_utc="2025-01-02", wall_ns=7)]))
    store.append(ResultBatch([row("a" * 40, 1, ok=False, created_utc="2025-01-01", wall_ns=1)]))
    store.append(ResultBatch([row("a" * 40, 1, ok=False, created_utc="2025-01-03", wall_ns=2)]))
    df = store.measurements()
    assert sorted(zip(df["rep"], df["wall_ns"], strict=True)) == [(0, 7), (1, 2)]
    assert len(store.measurements(dedupe=False)) == 4


def test_open_refuses_other_schemas_and_non_stores(tmp_path: Path) -> None:
    store = ResultsStore.create(tmp_path / "r", {"name": "t"})
    meta = json.loads((store.root / "store.json").read_text())
    meta["schema"]["version"] = 1
    (store.root / "store.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError) as e:
        ResultsStore.open(store.root)
    assert str(e.value) == (
        f"{store.root}: results store schema version 1; this cvmfs-modelio reads version 2 "
        f"(use the version that wrote it, or a new -o)"
    )
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("")
    with pytest.raises(UsageError, match="not a results store"):
        ResultsStore.open(tmp_path / "junk")
    with pytest.raises(UsageError, match=r"junk: not a results store \(no store.json\)"):
        ResultsStore.open_for_run(tmp_path / "junk", {"name": "t"}, resume=True)
    (store.root / "store.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"store\.json: unreadable"):
        ResultsStore.open(store.root)


def test_open_for_run_rules(tmp_path: Path) -> None:
    camp = {"name": "t", "reps": 2, "source": "/a/c.toml"}
    store, changed = ResultsStore.open_for_run(tmp_path / "r", camp, resume=False)
    assert not changed
    # an empty store may be reused without --resume
    ResultsStore.open_for_run(tmp_path / "r", camp, resume=False)
    store.append(ResultBatch([row("a" * 40, 0)]))
    with pytest.raises(UsageError) as e:
        ResultsStore.open_for_run(tmp_path / "r", camp, resume=False)
    assert str(e.value) == (
        f"{tmp_path / 'r'}: already holds 1 measurements of campaign 't'; add --resume to "
        f"continue it, or choose another -o"
    )
    with pytest.raises(UsageError, match="holds results of campaign 't', not 'u'"):
        ResultsStore.open_for_run(tmp_path / "r", {"name": "u"}, resume=True)
    _s, changed = ResultsStore.open_for_run(tmp_path / "r", {**camp, "source": "/b/c.toml"}, True)
    assert not changed  # the file moved; what it declares did not
    s2, changed = ResultsStore.open_for_run(tmp_path / "r", {**camp, "reps": 5}, True)
    assert changed and s2.campaign["reps"] == 5
    assert s2.meta["previous_campaigns"][0]["campaign"]["reps"] == 2
    assert ResultsStore.open(tmp_path / "r").campaign["reps"] == 5


def test_lock_excludes_a_second_run_and_records_the_owner(tmp_path: Path) -> None:
    store = ResultsStore.create(tmp_path / "r", {"name": "t"})
    with store.lock({"pid": 4242, "workdir": "/w"}) as prev:
        assert prev is None
        other = ResultsStore.open(store.root)
        with pytest.raises(UsageError) as e, other.lock({"pid": 1}):
            pass
        assert str(e.value) == f"{store.root}: in use by another run (pid 4242)"
    # a holder that died without releasing (SIGKILL) leaves its record for the next run
    fd = os.open(store.root / ".lock", os.O_WRONLY)
    os.write(fd, b'{"pid": 999999, "workdir": "/gone"}\n')
    os.close(fd)
    with store.lock({"pid": 1}) as prev:
        assert prev == {"pid": 999999, "workdir": "/gone"}


def test_task_sinks_merge_every_measurement_exactly_once(tmp_path: Path) -> None:
    store = ResultsStore.create(tmp_path / "r", {"name": "t"})
    store.append(ResultBatch([row("k0".ljust(40, "0"), 0)]))
    keys = [f"k{i}".ljust(40, "0") for i in range(4)]
    t1, t2 = store.task_sink("1"), store.task_sink("2")
    a = [row(keys[0], 0), row(keys[1], 0)]  # keys[0] rep 0 is already in the store
    t1.append(ResultBatch(a, [fetch(a[1]["measurement_id"], 0), fetch(a[0]["measurement_id"], 0)]))
    b = [row(keys[2], 0), row(keys[3], 0)]
    t2.append(ResultBatch(b, [fetch(b[0]["measurement_id"], 0)]))
    t2.append(ResultBatch([row(keys[2], 0)]))  # a task that ran twice
    merged, dropped = store.merge_tasks()
    assert (merged, dropped) == (3, 2)
    df = store.measurements(dedupe=False)
    assert sorted(zip(df["cell_key"], df["rep"], strict=True)) == [(k, 0) for k in keys]
    fe = store.fetches()
    assert sorted(fe["measurement_id"]) == sorted([a[1]["measurement_id"], b[0]["measurement_id"]])
    assert not (store.root / "tasks" / "1").exists()
    with pytest.raises(UsageError, match="must be a plain name"):
        store.task_sink("../x")
