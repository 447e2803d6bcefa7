"""What-if sweeps: many xor32 (min, avg, max) configurations over a corpus of files and traces.

The xor32 candidate set of a file depends only on ``avg`` and the candidate sets are
nested (a larger ``avg`` narrows the accepted band around ``0x7FFFFFFF``), so each
file is hashed once, for the smallest ``avg`` of the sweep, keeping every
candidate's distance ``|h - 0x7FFFFFFF|``; the candidates of any larger ``avg`` are a
filter away, and each (min, max) layout is derived from them in C++
(``_native.xor32_cuts``) without touching the data again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.chunks.analysis import FetchModel, Requests, analyze, whole_file_requests
from cvmfs_modelio.chunks.layouts import Layout, validate_min_avg_max
from cvmfs_modelio.core.errors import UsageError, os_error


@dataclass(frozen=True)
class SweepConfig:
    """One xor32 configuration (bytes)."""

    min_size: int
    avg_size: int
    max_size: int

    def label(self) -> str:
        """``4.0 MiB/8.0 MiB/16.0 MiB`` style."""
        from cvmfs_modelio.core.units import fmt_bytes

        return f"{fmt_bytes(self.min_size)}/{fmt_bytes(self.avg_size)}/{fmt_bytes(self.max_size)}"


def config_grid(
    avgs: Sequence[int], min_ratios: Sequence[float], max_ratios: Sequence[float]
) -> list[SweepConfig]:
    """Every ``(avg * min_ratio, avg, avg * max_ratio)``; invalid combinations raise UsageError."""
    out: list[SweepConfig] = []
    for avg in avgs:
        for rmin in min_ratios:
            for rmax in max_ratios:
                mn, mx = int(avg * rmin), int(avg * rmax)
                validate_min_avg_max(mn, avg, mx)
                out.append(SweepConfig(mn, avg, mx))
    return out


def avg_range(lo: int, hi: int) -> list[int]:
    """Powers of two from ``lo`` to ``hi`` (bytes, both included when powers of two)."""
    if lo < 33 or hi < lo:
        raise UsageError(f"avg range must satisfy 33 <= low <= high, got {lo}..{hi}")
    out = []
    v = 1
    while v < lo:
        v <<= 1
    while v <= hi:
        out.append(v)
        v <<= 1
    if not out:
        out = [lo]
    return out


@dataclass
class CorpusFile:
    """A file of the corpus and what loading it asks for.

    ``requests`` come from a trace; without one the whole-file load is assumed
    (``traced`` False).
    """

    path: str
    size: int
    requests: Requests
    traced: bool
    _pos: npt.NDArray[np.int64] | None = field(default=None, repr=False)
    _dist: npt.NDArray[np.uint32] | None = field(default=None, repr=False)
    _scanned_avg: int = 0
    _by_avg: dict[int, npt.NDArray[np.int64]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str, requests: Requests | None = None) -> CorpusFile:
        """A corpus entry for ``path`` (UsageError if it cannot be read)."""
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise os_error(path, e) from None
        if requests is None:
            return cls(path, size, whole_file_requests(size), traced=False)
        return cls(path, size, requests, traced=True)

    def scan(self, smallest_avg: int) -> None:
        """Hash the file once: every candidate for ``smallest_avg`` and its distance."""
        from cvmfs_modelio import _native

        if self._pos is not None and self._scanned_avg <= smallest_avg:
            return
        try:
            pos, dist, size = _native.xor32_scan_file(self.path, smallest_avg)
        except OSError as e:
            raise os_error(self.path, e) from None
        if size != self.size:
            raise UsageError(f"{self.path}: file changed size while being scanned")
        self._pos, self._dist, self._scanned_avg = pos, dist, smallest_avg
        self._by_avg.clear()

    def candidates(self, avg: int) -> npt.NDArray[np.int64]:
        """Sorted candidate positions for ``avg`` (needs a prior :meth:`scan` with avg <=)."""
        from cvmfs_modelio import _native

        if self._pos is None or self._dist is None or avg < self._scanned_avg:
            self.scan(avg)
        assert self._pos is not None and self._dist is not None
        got = self._by_avg.get(avg)
        if got is None:
            got = np.ascontiguousarray(self._pos[self._dist < _native.xor32_threshold(avg)])
            self._by_avg[avg] = got
        return got

    def layout(self, cfg: SweepConfig) -> Layout:
        """The xor32 layout of this file under ``cfg``."""
        from cvmfs_modelio import _native

        offsets = _native.xor32_cuts(
            self.candidates(cfg.avg_size), self.size, cfg.min_size, cfg.max_size
        )
        return Layout.from_offsets(
            offsets,
            self.size,
            "xor32",
            {"min": cfg.min_size, "avg": cfg.avg_size, "max": cfg.max_size},
        )


@dataclass(frozen=True)
class SweepRow:
    """Totals over the corpus for one configuration (bytes, ns)."""

    config: SweepConfig
    n_chunks: int
    n_chunked_files: int
    requested_bytes: int
    fetched_bytes: int
    n_fetches: int
    fetch_time_ns: float

    @property
    def amplification(self) -> float:
        """Fetched bytes per distinct requested byte."""
        return self.fetched_bytes / self.requested_bytes if self.requested_bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        return {
            "min_bytes": self.config.min_size,
            "avg_bytes": self.config.avg_size,
            "max_bytes": self.config.max_size,
            "n_chunks": self.n_chunks,
            "n_chunked_files": self.n_chunked_files,
            "requested_bytes": self.requested_bytes,
            "fetched_bytes": self.fetched_bytes,
            # null, not NaN (which is not JSON), when nothing was requested
            "amplification": self.amplification if self.requested_bytes else None,
            "n_fetches": self.n_fetches,
            "fetch_time_ns": self.fetch_time_ns,
        }


def run_sweep(
    corpus: Sequence[CorpusFile],
    configs: Sequence[SweepConfig],
    model: FetchModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[SweepRow]:
    """Evaluate every configuration over the corpus.

    Files are loaded one after another, so fetch times add up over files.
    """
    if not configs:
        return []
    smallest = min(c.avg_size for c in configs)
    for f in corpus:
        if progress:
            progress(f"hashing {f.path}")
        f.scan(smallest)
    unique = {f.path: f.requests.unique_bytes() for f in corpus}
    rows = []
    for cfg in configs:
        n_chunks = n_chunked = fetched = fetches = 0
        t = 0.0
        for f in corpus:
            a = analyze(f.requests, f.layout(cfg), model)
            n_chunks += a.n_chunks
            n_chunked += a.chunked
            fetched += a.fetched_bytes
            fetches += a.n_fetches
            t += a.fetch_time_ns
        rows.append(
            SweepRow(
                config=cfg,
                n_chunks=n_chunks,
                n_chunked_files=n_chunked,
                requested_bytes=sum(unique.values()),
                fetched_bytes=fetched,
                n_fetches=fetches,
                fetch_time_ns=t,
            )
        )
    return rows
