"""Reading a results store (``docs/results-store.md``) into pandas.

A store is a directory with ``store.json`` (schema ``cvmfs-modelio.results-store``, the
version of :mod:`cvmfs_modelio.campaign.store`) and one Parquet dataset per table:
``measurements/`` and ``fetches/`` (required), ``accesses/`` and ``reads/`` (optional).
:func:`load_results` checks the schema and the columns every consumer relies on, and gives
one :class:`Results`, read as the runner's store reads itself (committed parts only, one row
per cell and repetition); nothing else in ``stats``/``report`` touches the files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cvmfs_modelio.campaign.store import SCHEMA_NAME, SCHEMA_VERSION
from cvmfs_modelio.core.errors import UsageError

SCHEMA = {"name": SCHEMA_NAME, "version": SCHEMA_VERSION}

MEASUREMENT_COLUMNS = (
    "measurement_id",
    "cell_key",
    "rep",
    "model",
    "model_path",
    "model_family",
    "model_bytes",
    "target",
    "chunking",
    "chunk_min_bytes",
    "chunk_avg_bytes",
    "chunk_max_bytes",
    "chunk_label",
    "rtt_ns",
    "bandwidth_bytes_per_s",
    "client_profile",
    "prefetch_depth",
    "parallel_handles",
    "cache_state",
    "loader",
    "ok",
    "time_to_first_inference_ns",
    "objects_fetched",
    "bytes_fetched",
    "cold_verified",
)
FETCH_COLUMNS = (
    "measurement_id",
    "seq",
    "object",
    "kind",
    "compressed_bytes",
    "bytes",
    "start_ns",
    "duration_ns",
    "rtt_ns",
    "bandwidth_bytes_per_s",
    "client_profile",
)
ACCESS_COLUMNS = (
    "measurement_id",
    "file",
    "chunk_index",
    "chunk_offset_bytes",
    "chunk_bytes",
    "first_touch_seq",
    "first_touch_ns",
)
READ_COLUMNS = (
    "measurement_id",
    "source",
    "file",
    "offset_bytes",
    "length_bytes",
    "t_ns",
    "duration_ns",
    "lane",
)
VANTAGE_POINTS = ("syscall", "page-in", "fuse-read", "fetch")


@dataclass
class Results:
    """The tables of one results store (pandas DataFrames) and its ``store.json``."""

    path: Path
    meta: dict[str, Any]
    measurements: pd.DataFrame
    fetches: pd.DataFrame
    accesses: pd.DataFrame | None = None
    reads: pd.DataFrame | None = None
    _joined: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def campaign(self) -> dict[str, Any]:
        c = self.meta.get("campaign", {})
        return c if isinstance(c, dict) else {}

    def profiles(self) -> list[str]:
        """Client profiles present in the measurements, sorted."""
        return sorted(str(p) for p in self.measurements["client_profile"].unique())

    def fetches_with_cells(self) -> pd.DataFrame:
        """Fetch rows joined with their measurement's cell columns (one join, cached)."""
        if self._joined is None:
            cols = [
                "measurement_id",
                "model",
                "model_family",
                "rep",
                "prefetch_depth",
                "cache_state",
                "ok",
                "traced",
                "chunk_label",
            ]
            m = self.measurements[[c for c in cols if c in self.measurements.columns]]
            m = m.rename(columns={"ok": "measurement_ok"})
            self._joined = self.fetches.merge(m, on="measurement_id", how="inner")
        return self._joined


def _read_table(store: Any, name: str, columns: tuple[str, ...], required: bool) -> Any:
    from cvmfs_modelio.campaign.store import _parts

    d = store.root / name
    if not _parts(d):
        if required:
            raise UsageError(f"{store.root}: results store has no {name}/ table")
        return None
    try:
        df = store.measurements() if name == "measurements" else store._of_measurements(name)
    except UsageError:
        raise
    except Exception as e:  # pyarrow raises several types on damaged or mismatched parts
        why = " ".join(str(e).split())  # pyarrow's messages span lines: keep one
        raise UsageError(
            f"{d}: cannot read the Parquet table ({type(e).__name__}: {why})"
        ) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UsageError(f"{d}: missing column(s) {', '.join(missing)}")
    return df


def load_results(path: str | os.PathLike[str]) -> Results:
    """Open the results store at ``path``; UsageError (one line) if it is not one we can read."""
    store = Path(path)
    meta_path = store / "store.json"
    if not store.is_dir():
        raise UsageError(f"{store}: no such results directory")
    if not meta_path.is_file():
        raise UsageError(f"{store}: not a results store (no store.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{meta_path}: not readable JSON ({e})") from None
    schema = meta.get("schema") if isinstance(meta, dict) else None
    if not isinstance(schema, dict) or schema.get("name") != SCHEMA["name"]:
        raise UsageError(f"{meta_path}: not a cvmfs-modelio results store")
    if schema.get("version") != SCHEMA["version"]:
        raise UsageError(
            f"{meta_path}: results store schema version {schema.get('version')!r}, "
            f"this tool reads version {SCHEMA['version']}"
        )
    from cvmfs_modelio.campaign.store import ResultsStore

    rs = ResultsStore(store, meta)
    measurements = _read_table(rs, "measurements", MEASUREMENT_COLUMNS, True)
    fetches = _read_table(rs, "fetches", FETCH_COLUMNS, True)
    accesses = _read_table(rs, "accesses", ACCESS_COLUMNS, False)
    reads = _read_table(rs, "reads", READ_COLUMNS, False)
    if "traced" not in measurements.columns:
        measurements["traced"] = False
    return Results(store, meta, measurements, fetches, accesses, reads)
