"""The results store: a directory of Parquet part files, appended atomically, never rewritten.

Layout (``docs/results-store.md`` is the reference)::

    RESULTS/
      store.json                  schema name + version, the declared campaign, created_utc
      measurements/part-*.parquet one row per measurement (cell x repetition)
      fetches/part-*.parquet      one row per object the emulated client fetched
      accesses/part-*.parquet     chunks touched per file (first-touch order and time)
      reads/part-*.parquet        every FUSE open/read and fetch of a load, as byte ranges
      tasks/<id>/...              per-task results of batch executors, merged into the above
      .lock                       held (flock) by the run writing the store

A batch of results is written as one part per table under the *same* part name; the
measurements part is written last and is the commit: a fetches or accesses part whose
measurements part does not exist belongs to an interrupted write and is never read.
Temporary files start with ``.``, which pyarrow's dataset discovery skips, so
``pandas.read_parquet("RESULTS/measurements")`` always reads complete parts only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cvmfs_modelio.core.atomicio import write_atomic_bytes
from cvmfs_modelio.core.errors import UsageError

SCHEMA_NAME = "cvmfs-modelio.results-store"
# 2: measurements.traced; fetches.offset_bytes; accesses.chunk_offset_bytes, chunk_bytes,
# lane; the reads table (what the cost model and the report read, docs/results-store.md)
SCHEMA_VERSION = 2
STORE_JSON = "store.json"
LOCK = ".lock"
TABLES = ("measurements", "fetches", "accesses", "reads")
_DETAIL_TABLES = ("fetches", "accesses", "reads")  # written before the commit
TASKS = "tasks"

_S, _I, _B, _F = pa.string(), pa.int64(), pa.bool_(), pa.float64()

MEASUREMENT_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    # identity
    ("measurement_id", _S),
    ("cell_key", _S),
    ("rep", _I),
    ("campaign", _S),
    ("created_utc", _S),
    ("run_id", _S),
    ("task_id", _S),
    ("executor", _S),
    # cell parameters
    ("model", _S),
    ("model_path", _S),
    ("model_source", _S),
    ("model_family", _S),
    ("model_format", _S),
    ("model_bytes", _I),
    ("target", _S),
    ("chunking", _B),
    ("chunk_min_bytes", _I),
    ("chunk_avg_bytes", _I),
    ("chunk_max_bytes", _I),
    ("chunk_label", _S),
    ("rtt_ns", _I),
    ("bandwidth_bytes_per_s", _I),
    ("client_profile", _S),
    ("prefetch_depth", _I),
    ("parallel_handles", _I),
    ("cache_state", _S),
    ("loader", _S),
    ("traced", _B),
    # outcomes
    ("ok", _B),
    ("error", _S),
    ("session_ns", _I),
    ("first_inference_ns", _I),
    ("time_to_first_inference_ns", _I),
    ("wall_ns", _I),
    ("objects_fetched", _I),
    ("bytes_fetched", _I),
    ("bytes_requested", _I),
    ("chunks_total", _I),
    ("chunks_touched", _I),
    ("objects_total", _I),
    ("fuse_reads", _I),
    ("fuse_opens", _I),
    # the cache state, checked
    ("cold_verified", _B),
    ("state_verified", _B),
    ("resident_bytes_before", _I),
    ("cached_objects_before", _I),
    ("primed", _B),
    # the child process (getrusage of the child)
    ("user_ns", _I),
    ("system_ns", _I),
    ("max_rss_bytes", _I),
    ("minor_faults", _I),
    ("major_faults", _I),
    # where in the series, when, on what
    ("series_index", _I),
    ("load_start_ns", _I),
    ("load_average_1m", _F),
    ("hostname", _S),
    ("environment_json", _S),
)

FETCH_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("measurement_id", _S),
    ("seq", _I),
    ("object", _S),
    ("kind", _S),
    ("file", _S),
    ("chunk_index", _I),
    ("offset_bytes", _I),
    ("compressed_bytes", _I),
    ("bytes", _I),
    ("start_ns", _I),
    ("duration_ns", _I),
    ("thread", _I),
    ("http_status", _I),
    ("ok", _B),
    ("rtt_ns", _I),
    ("bandwidth_bytes_per_s", _I),
    ("client_profile", _S),
)

ACCESS_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("measurement_id", _S),
    ("file", _S),
    ("chunk_index", _I),
    ("chunk_offset_bytes", _I),
    ("chunk_bytes", _I),
    ("first_touch_seq", _I),
    ("first_touch_ns", _I),
    ("lane", _I),
    ("reads", _I),
    ("bytes", _I),
    ("source", _S),
)

READ_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("measurement_id", _S),
    ("source", _S),
    ("file", _S),
    ("offset_bytes", _I),
    ("length_bytes", _I),
    ("t_ns", _I),
    ("duration_ns", _I),
    ("lane", _I),
)

SCHEMAS: dict[str, pa.Schema] = {
    "measurements": pa.schema(MEASUREMENT_COLUMNS),
    "fetches": pa.schema(FETCH_COLUMNS),
    "accesses": pa.schema(ACCESS_COLUMNS),
    "reads": pa.schema(READ_COLUMNS),
}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass
class ResultBatch:
    """Rows of the three tables that are committed together (one series, usually)."""

    measurements: list[dict[str, Any]] = field(default_factory=list)
    fetches: list[dict[str, Any]] = field(default_factory=list)
    accesses: list[dict[str, Any]] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)

    def rows(self, table: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = getattr(self, table)
        return rows


def _table(name: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    schema = SCHEMAS[name]
    want = set(schema.names)
    for r in rows:
        if set(r) != want:
            missing, extra = sorted(want - set(r)), sorted(set(r) - want)
            raise ValueError(f"{name} row: missing {missing}, unexpected {extra}")
    return pa.Table.from_pylist(list(rows), schema=schema)


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    data: bytes = buf.getvalue().to_pybytes()
    return data


def part_name() -> str:
    """``part-<UTC time>-<uuid4>.parquet``: sorts by time, unique across hosts and tasks."""
    ts = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"part-{ts}-{uuid.uuid4().hex}.parquet"


def _parts(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.startswith("part-") and p.suffix == ".parquet")


class PartSink:
    """A directory with the three tables, each a folder of part files (a store or a task)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, table: str) -> Path:
        return self.root / table

    def append(self, batch: ResultBatch) -> str | None:
        """Write ``batch`` atomically (fetches, accesses, reads, then measurements: the commit).

        Returns the part name, or None for an empty batch.  Rows must hold exactly the
        table's columns (ValueError otherwise: a programming error, not bad input).
        """
        if not batch.measurements:
            return None
        tables = {t: _table(t, batch.rows(t)) for t in TABLES}
        name = part_name()
        for t in (*_DETAIL_TABLES, "measurements"):
            if t != "measurements" and tables[t].num_rows == 0:
                continue
            d = self._dir(t)
            d.mkdir(parents=True, exist_ok=True)
            write_atomic_bytes(d / name, _parquet_bytes(tables[t]), fsync=True)
        return name

    # -- reading
    def read(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """Every committed row of ``table`` (orphaned fetch/access parts skipped)."""
        schema = SCHEMAS[table]
        parts = _parts(self._dir(table))
        if table != "measurements":
            committed = {p.name for p in _parts(self._dir("measurements"))}
            parts = [p for p in parts if p.name in committed]
        if not parts:
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        tables = []
        for p in parts:
            try:
                tables.append(pq.read_table(p, columns=list(columns) if columns else None))
            except (OSError, pa.ArrowInvalid) as e:
                # pyarrow's message may span lines (thrift errors): one line, as promised
                why = " ".join(str(e).split())
                raise UsageError(f"{p}: unreadable part file ({why})") from None
        return pa.concat_tables(tables, promote_options="none")

    def measured(self) -> list[tuple[str, int, bool, str]]:
        """(cell_key, rep, ok, created_utc) of every committed measurement row."""
        t = self.read("measurements", ["cell_key", "rep", "ok", "created_utc"])
        cols = [t.column(c).to_pylist() for c in ("cell_key", "rep", "ok", "created_utc")]
        return list(zip(*cols, strict=True))

    def done(self, retry_failed: bool = False) -> set[tuple[str, int]]:
        """(cell_key, rep) pairs that need no new measurement.

        A failed measurement counts as done (a model ORT cannot load fails every time)
        unless ``retry_failed``.
        """
        return {(k, r) for k, r, ok, _t in self.measured() if ok or not retry_failed}


class ResultsStore(PartSink):
    """An opened results store (``store.json`` checked); see the module docstring."""

    def __init__(self, root: Path, meta: dict[str, Any]) -> None:
        super().__init__(root)
        self.meta = meta

    @property
    def campaign(self) -> dict[str, Any]:
        c: dict[str, Any] = self.meta.get("campaign", {})
        return c

    # -- opening
    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> ResultsStore:
        """Open an existing store; UsageError for anything not of this :data:`SCHEMA_VERSION`."""
        r = Path(root)
        meta_path = r / STORE_JSON
        if not r.is_dir():
            raise UsageError(f"{r}: no such results store")
        if not meta_path.is_file():
            raise UsageError(f"{r}: not a results store (no {STORE_JSON})")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"{meta_path}: unreadable ({e})") from None
        schema = meta.get("schema") if isinstance(meta, dict) else None
        if not isinstance(schema, dict) or schema.get("name") != SCHEMA_NAME:
            raise UsageError(f"{meta_path}: not a {SCHEMA_NAME} (schema {schema!r})")
        if schema.get("version") != SCHEMA_VERSION:
            raise UsageError(
                f"{r}: results store schema version {schema.get('version')!r}; this "
                f"cvmfs-modelio reads version {SCHEMA_VERSION} (use the version that wrote it, "
                f"or a new -o)"
            )
        return cls(r, meta)

    @classmethod
    def create(cls, root: str | os.PathLike[str], campaign: Mapping[str, Any]) -> ResultsStore:
        """Make a new store at ``root`` (absent or an empty directory)."""
        r = Path(root)
        if r.exists() and (not r.is_dir() or any(r.iterdir())):
            raise UsageError(f"{r}: exists and is not an empty directory or a results store")
        try:
            r.mkdir(parents=True, exist_ok=True)
            for t in TABLES:
                (r / t).mkdir(exist_ok=True)
        except OSError as e:
            raise UsageError(f"{r}: cannot create the results store: {e.strerror}") from None
        meta = {
            "schema": {"name": SCHEMA_NAME, "version": SCHEMA_VERSION},
            "campaign": dict(campaign),
            "created_utc": utc_now(),
            "previous_campaigns": [],
        }
        store = cls(r, meta)
        store._write_meta()
        return store

    @classmethod
    def open_for_run(
        cls, root: str | os.PathLike[str], campaign: Mapping[str, Any], resume: bool
    ) -> tuple[ResultsStore, bool]:
        """The store a run writes to; (store, campaign changed since the store was made).

        A new or empty ``root`` is created.  An existing store is continued only with
        ``resume`` (or when it holds no measurement yet) and only for a campaign of the
        same name; a changed declaration (more reps, another RTT) is recorded in
        ``store.json`` (the earlier one kept under ``previous_campaigns``).
        """
        r = Path(root)
        if not r.exists() or (r.is_dir() and not any(r.iterdir())):
            return cls.create(r, campaign), False
        store = cls.open(r)
        old = store.campaign
        if old.get("name") != campaign.get("name"):
            raise UsageError(
                f"{r}: holds results of campaign {old.get('name')!r}, not "
                f"{campaign.get('name')!r} (choose another -o)"
            )
        n = len(store.measured())
        if n and not resume:
            raise UsageError(
                f"{r}: already holds {n} measurements of campaign {old.get('name')!r}; "
                f"add --resume to continue it, or choose another -o"
            )
        changed = _comparable(old) != _comparable(campaign)
        if changed:
            store.meta.setdefault("previous_campaigns", []).append(
                {"campaign": old, "replaced_utc": utc_now()}
            )
            store.meta["campaign"] = dict(campaign)
            store._write_meta()
        return store, changed

    def _write_meta(self) -> None:
        text = json.dumps(self.meta, indent=1, sort_keys=True) + "\n"
        try:
            write_atomic_bytes(self.root / STORE_JSON, text.encode(), fsync=True)
        except OSError as e:
            raise UsageError(f"{self.root / STORE_JSON}: cannot write: {e.strerror}") from None

    # -- exclusive use
    @contextlib.contextmanager
    def lock(self, owner: Mapping[str, Any]) -> Iterator[dict[str, Any] | None]:
        """Hold the store for one run; yields what the previous holder recorded (or None).

        A second run on the same store gets a UsageError naming the holder's pid.  The
        lock is an ``flock`` and dies with its process (also on SIGKILL); the recorded
        owner (pid, work directory) lets the next run clean up what a killed one left.
        """
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                holder = _read_owner(fd)
                pid = holder.get("pid", "?") if holder else "?"
                raise UsageError(f"{self.root}: in use by another run (pid {pid})") from None
            previous = _read_owner(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(dict(owner)) + "\n").encode(), 0)
            try:
                yield previous
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def remove_orphans(self) -> int:
        """Delete fetch/access parts without a measurements part and stale temporary files.

        Only safe while holding :meth:`lock` (no writer is between its writes)."""
        committed = {p.name for p in _parts(self._dir("measurements"))}
        removed = 0
        for t in TABLES:
            d = self._dir(t)
            if not d.is_dir():
                continue
            for p in d.iterdir():
                stale_tmp = p.name.startswith(".") and ".tmp" in p.name
                orphan = t != "measurements" and p in _parts(d) and p.name not in committed
                if stale_tmp or orphan:
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- batch tasks
    def task_sink(self, task_id: str) -> PartSink:
        """Where one batch task writes its results (merged by :meth:`merge_tasks`)."""
        if not task_id or "/" in task_id or task_id.startswith("."):
            raise UsageError(f"task id {task_id!r} must be a plain name")
        d = self.root / TASKS / task_id
        d.mkdir(parents=True, exist_ok=True)
        return PartSink(d)

    def merge_tasks(self) -> tuple[int, int]:
        """Move every task's committed parts into the store; (rows merged, rows dropped).

        Rows of a (cell_key, rep) the store already has are dropped, so a task that ran
        twice (a resubmitted batch job) never duplicates a measurement.  Each part moves
        by rename (atomic), the measurements part last.  Hold :meth:`lock` while merging.
        """
        tasks = self.root / TASKS
        if not tasks.is_dir():
            return 0, 0
        have = {(k, r) for k, r, _ok, _t in self.measured()}
        merged = dropped = 0
        for tdir in sorted(p for p in tasks.iterdir() if p.is_dir()):
            sink = PartSink(tdir)
            for mpart in _parts(tdir / "measurements"):
                rows = pq.read_table(mpart).to_pylist()
                fresh = [r for r in rows if (r["cell_key"], r["rep"]) not in have]
                dropped += len(rows) - len(fresh)
                if fresh:
                    ids = {r["measurement_id"] for r in fresh}
                    batch = ResultBatch(measurements=fresh)
                    for t in _DETAIL_TABLES:
                        p = tdir / t / mpart.name
                        if p.is_file():
                            batch.rows(t).extend(
                                r
                                for r in pq.read_table(p).to_pylist()
                                if r["measurement_id"] in ids
                            )
                    if len(fresh) == len(rows):
                        self._move_part(tdir, mpart.name)
                    else:
                        self.append(batch)
                    have.update((r["cell_key"], r["rep"]) for r in fresh)
                    merged += len(fresh)
            del sink
            shutil.rmtree(tdir)
        return merged, dropped

    def _move_part(self, tdir: Path, name: str) -> None:
        for t in (*_DETAIL_TABLES, "measurements"):
            src = tdir / t / name
            if src.is_file():
                self._dir(t).mkdir(exist_ok=True)
                os.replace(src, self._dir(t) / name)

    # -- pandas
    def measurements(self, dedupe: bool = True) -> Any:
        """The measurements as a pandas DataFrame.

        With ``dedupe`` (default) one row per (cell_key, rep): an ok row over a failed one
        (``--retry-failed`` reruns leave both on disk), else the latest.
        """
        df = self.read("measurements").to_pandas()
        if not dedupe or df.empty:
            return df
        df = df.sort_values(["cell_key", "rep", "ok", "created_utc"])
        return df.drop_duplicates(["cell_key", "rep"], keep="last").reset_index(drop=True)

    def fetches(self) -> Any:
        """Fetch rows of the measurements :meth:`measurements` returns (pandas)."""
        return self._of_measurements("fetches")

    def accesses(self) -> Any:
        return self._of_measurements("accesses")

    def reads(self) -> Any:
        return self._of_measurements("reads")

    def _of_measurements(self, table: str) -> Any:
        ids = set(self.measurements()["measurement_id"])
        df = self.read(table).to_pandas()
        return df[df["measurement_id"].isin(ids)].reset_index(drop=True)


def _comparable(campaign: Mapping[str, Any]) -> dict[str, Any]:
    # The file's location may move between runs; what it declares is what matters.
    return {k: v for k, v in campaign.items() if k != "source"}


def _read_owner(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 65536, 0)
    if not raw.strip():
        return None
    try:
        doc = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
