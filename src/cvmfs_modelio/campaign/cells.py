"""Cells: one combination of the campaign matrix for one model, and its stable key.

A cell is everything that defines a measurement except the repetition.  Its key is the
SHA-1 of its canonical JSON parameters (sorted keys, no whitespace; RTT in ns, sizes in
bytes), so the same cell has the same key in every run, store and executor: resumption
and merging compare keys, never positions.

:func:`expand` lists the cells of a campaign in an order that shares setup: by chunk
configuration (one publication each), then by network and client settings (one server
and mount setting), then model, loader, and the cache states cold, warm, hot (the order
the CVMFS benchmark runs them in, so warm follows cold in one mount).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cvmfs_modelio.campaign.experiments import ChunkConfig
from cvmfs_modelio.campaign.spec import CACHE_STATES, CampaignSpec, ModelSpec


@dataclass(frozen=True)
class Cell:
    """One measured condition.  ``rtt_ns`` and ``bandwidth_bytes_per_s`` are -1 on a real
    repository (the network is what it is), ``bandwidth_bytes_per_s`` 0 means unlimited."""

    model: str
    model_source: str  # canonical JSON of ModelSpec.source(): what identifies the bytes
    target: str
    chunk: ChunkConfig
    rtt_ns: int
    bandwidth_bytes_per_s: int
    prefetch_depth: int
    parallel_handles: int
    client_profile: str
    cache_state: str
    loader: str

    def params(self) -> dict[str, Any]:
        """The canonical parameters (what the key is computed from)."""
        return {
            "model": self.model,
            "model_source": self.model_source,
            "target": self.target,
            "chunking": self.chunk.chunking,
            "chunk_min_bytes": self.chunk.min_size,
            "chunk_avg_bytes": self.chunk.avg_size,
            "chunk_max_bytes": self.chunk.max_size,
            "chunk_label": self.chunk.label,
            "rtt_ns": self.rtt_ns,
            "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
            "prefetch_depth": self.prefetch_depth,
            "parallel_handles": self.parallel_handles,
            "client_profile": self.client_profile,
            "cache_state": self.cache_state,
            "loader": self.loader,
        }

    @property
    def key(self) -> str:
        return cell_key(self.params())

    @property
    def publish_key(self) -> tuple[Any, ...]:
        """Cells with the same publish key share one published store and server."""
        return (self.target, self.chunk)

    @property
    def mount_key(self) -> tuple[Any, ...]:
        """Cells with the same mount key can share one client mount (same settings)."""
        return (
            *self.publish_key,
            self.rtt_ns,
            self.bandwidth_bytes_per_s,
            self.prefetch_depth,
            self.parallel_handles,
            self.client_profile,
        )

    @property
    def series_key(self) -> tuple[Any, ...]:
        """Cells of one series run in one mount: cold, then warm, then hot."""
        return (*self.mount_key, self.model, self.loader)

    def label(self) -> str:
        """Short human description for progress lines."""
        net = ""
        if self.rtt_ns >= 0:
            bw = self.bandwidth_bytes_per_s
            net = f" rtt {self.rtt_ns / 1e6:g} ms" + (f" {bw / (1 << 20):g} MiB/s" if bw else "")
        extra = f" prefetch {self.prefetch_depth}" if self.prefetch_depth else ""
        return f"{self.model} [{self.chunk.label}]{net}{extra} {self.loader} {self.cache_state}"

    def to_json(self) -> dict[str, Any]:
        """Serialisable form (an executor ships cells to batch tasks with it)."""
        d = asdict(self)
        d["chunk"] = asdict(self.chunk)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        return cls(**{**d, "chunk": ChunkConfig(**d["chunk"])})


def cell_key(params: dict[str, Any]) -> str:
    """SHA-1 (hex) of the canonical JSON of ``params``."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha1(text.encode("ascii")).hexdigest()


def model_source(spec: ModelSpec) -> str:
    return json.dumps(spec.source(), sort_keys=True, separators=(",", ":"))


def expand(spec: CampaignSpec) -> list[Cell]:
    """Every cell of the campaign, in setup-sharing order (see the module docstring)."""
    m = spec.matrix
    order = {s: i for i, s in enumerate(CACHE_STATES)}
    caches = sorted(m.cache, key=order.__getitem__)
    profiles = list(m.client_profile)
    out: list[Cell] = []
    for chunk in m.chunking:
        for rtt in m.rtt_ms:
            for bw in m.bandwidth:
                for prefetch in m.prefetch:
                    for parallel in m.parallel:
                        for profile in profiles:
                            for model in spec.models:
                                for loader in m.loader:
                                    for cache in caches:
                                        out.append(
                                            Cell(
                                                model=model.name,
                                                model_source=model_source(model),
                                                target=spec.target.kind,
                                                chunk=chunk,
                                                rtt_ns=round(rtt * 1e6) if rtt >= 0 else -1,
                                                bandwidth_bytes_per_s=bw,
                                                prefetch_depth=prefetch,
                                                parallel_handles=parallel,
                                                client_profile=profile,
                                                cache_state=cache,
                                                loader=loader,
                                            )
                                        )
    return out


@dataclass(frozen=True)
class CellWork:
    """A cell and the repetitions of it still to measure (0-based)."""

    cell: Cell
    reps: tuple[int, ...]


def pending(cells: Sequence[Cell], reps: int, done: Iterable[tuple[str, int]]) -> list[CellWork]:
    """The (cell, missing repetitions) pairs, in the order of ``cells``."""
    finished = set(done)
    out = []
    for c in cells:
        k = c.key
        missing = tuple(r for r in range(reps) if (k, r) not in finished)
        if missing:
            out.append(CellWork(c, missing))
    return out


def series(work: Sequence[CellWork]) -> list[list[CellWork]]:
    """``work`` grouped into series (same series key), keeping first-seen order."""
    groups: dict[tuple[Any, ...], list[CellWork]] = {}
    for w in work:
        groups.setdefault(w.cell.series_key, []).append(w)
    return list(groups.values())
