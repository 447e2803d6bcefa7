"""The Python face of the native access-pattern probe (``csrc/probe``).

:func:`probe` opens one file read-only, runs an access pattern on it and returns every
operation as an event (``EVENT_DTYPE``) plus a summary.  Sizes are bytes, times are
nanoseconds on CLOCK_MONOTONIC.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio import _native
from cvmfs_modelio.core.errors import MeasurementError, UsageError
from cvmfs_modelio.core.events import EVENT_DTYPE, EventLog, Events, FileEntry

PATTERNS: tuple[str, ...] = (
    "seq",
    "reverse",
    "stride",
    "rand",
    "replay",
    "mmap-seq",
    "mmap-rand",
    "mmap-list",
)
FADVISE_HINTS: tuple[str, ...] = tuple(_native.probe_fadvise_hints())
MADVISE_HINTS: tuple[str, ...] = tuple(_native.probe_madvise_hints())
VERIFY_MODES: tuple[str, ...] = ("file", "pattern")
LIST_PATTERNS = ("replay", "mmap-list")
PAGE_SIZE = os.sysconf("SC_PAGESIZE")
DEFAULT_BLOCK = 1024 * 1024
MAX_THREADS = 1024

Residency = int | str  # resident pages, or "untrusted"


@dataclass(frozen=True)
class Latency:
    """Per-operation latency distribution in ns."""

    min: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float


@dataclass(frozen=True)
class ProbeSummary:
    """What one probe run measured.  Bytes, ns, bytes/s; residency in pages."""

    path: str
    pattern: str
    file_size: int
    ops: int
    bytes: int
    wall_ns: int
    throughput_bps: float
    iops: float
    latency_ns: Latency
    minflt: int | None  # None: faults not measured
    majflt: int | None
    residency_before: Residency
    residency_after: Residency
    residency_method: str
    total_pages: int
    cold: bool
    cold_evicted: bool | None  # None: cold not asked or residency untrusted
    cold_left_pages: int | None
    cold_dirty_pages: int | None  # of the pages left, dirty or under writeback (None: unknown)
    cold_flush: str | None  # fdatasync before the eviction: "ok", or why not ("EROFS")
    hints: list[str]
    threads: int
    failed_ops: int
    ops_done: int  # operations executed over all workers (== ops: each exactly once)
    verify: str | None
    verify_bad_ops: int | None
    verify_bad_bytes: int | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def not_cold(self) -> str | None:
        """Why a cold run was not (verifiably) cold; None when it was, or was not asked.

        Pages resident when the first operation starts make a cold number warm (a hint
        such as ``--fadvise willneed``, another reader); pages brought in during the run
        (readahead, an mmap pattern faulting the whole file in) are what a cold run measures.
        """
        if not self.cold:
            return None
        if isinstance(self.residency_before, str):
            return "residency not verifiable (untrusted): cold not guaranteed"
        if self.residency_before > 0:
            return f"{self.residency_before} of {self.total_pages} pages resident at the start"
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; every key carries its unit (``docs/results-format.md``)."""
        d = asdict(self)
        out = {_JSON_KEYS.get(k, k): v for k, v in d.items()}
        out["params"] = {_PARAM_KEYS.get(k, k): v for k, v in d["params"].items()}
        out["not_cold"] = self.not_cold
        return out


# ProbeSummary field -> JSON key, where the field's name does not say its unit.
_JSON_KEYS = {
    "file_size": "file_size_bytes",
    "bytes": "read_bytes",
    "throughput_bps": "throughput_bytes_per_s",
    "iops": "ops_per_s",
    "minflt": "minor_faults",
    "majflt": "major_faults",
    "residency_before": "resident_pages_before",
    "residency_after": "resident_pages_after",
    "total_pages": "file_pages",
}
_PARAM_KEYS = {
    "block": "block_bytes",
    "stride": "stride_bytes",
    "align": "align_bytes",
    "count": "ops",
}


@dataclass(frozen=True)
class ProbeResult:
    """Events (one per operation, in plan order) and their summary."""

    events: Events
    summary: ProbeSummary
    file: FileEntry

    def event_log(self) -> EventLog:
        """The events with their file table and the summary as metadata (for the event file)."""
        return EventLog(
            events=self.events,
            files={self.file.file_id: self.file},
            meta={"source": "probe", "summary": self.summary.to_dict()},
        )


@dataclass(frozen=True)
class PatternParams:
    """Resolved parameters of a pattern (defaults filled in), all in bytes."""

    block: int
    stride: int
    count: int
    align: int
    seed: int


def check_file(path: str | os.PathLike[str]) -> int:
    """Size in bytes of a regular, non-empty, readable file; UsageError naming it otherwise.

    Never opens a FIFO or device: the type is checked with stat first.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file or directory") from None
    except PermissionError:
        raise UsageError(f"{p}: permission denied") from None
    except OSError as e:
        raise UsageError(f"{p}: {os.strerror(e.errno or 0).lower()}") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise UsageError(f"{p}: is a directory")
    kinds = {
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    for test, kind in kinds.items():
        if test(mode):
            raise UsageError(f"{p}: is {kind}, not a regular file")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{p}: is not a regular file")
    if st.st_size == 0:
        raise UsageError(f"{p}: file is empty")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except PermissionError:
        raise UsageError(f"{p}: permission denied") from None
    except OSError as e:
        raise UsageError(f"{p}: {os.strerror(e.errno or 0).lower()}") from None
    os.close(fd)
    return st.st_size


def resolve_params(
    path: str,
    pattern: str,
    file_size: int,
    *,
    block: int | None,
    stride: int | None,
    count: int | None,
    align: int | None,
    seed: int,
) -> PatternParams:
    """Fill in defaults and check parameters against the file; UsageError names the problem.

    Defaults: block 1 MiB (one page for mmap patterns); stride twice the block; count as
    many operations as blocks fit in the file; alignment the block size (as fio does).
    """
    if pattern not in PATTERNS:
        raise UsageError(f"{path}: unknown pattern {pattern!r} (valid: {', '.join(PATTERNS)})")
    is_mmap = pattern.startswith("mmap-")
    b = (PAGE_SIZE if is_mmap else DEFAULT_BLOCK) if block is None else block
    if b <= 0:
        raise UsageError(f"{path}: block size must be > 0")
    random = pattern in ("rand", "mmap-rand")
    if random and b > file_size:
        raise UsageError(f"{path}: block size {b} is larger than the file ({file_size} bytes)")
    s = 2 * b if stride is None else stride
    if s <= 0:
        raise UsageError(f"{path}: stride must be > 0")
    c = max(1, file_size // b) if count is None else count
    if c <= 0:
        raise UsageError(f"{path}: count must be > 0")
    a = b if align is None else align
    if a <= 0:
        raise UsageError(f"{path}: alignment must be > 0")
    if not 0 <= seed < 2**64:
        raise UsageError(f"{path}: seed must be in [0, 2**64)")
    return PatternParams(block=b, stride=s, count=c, align=a, seed=seed)


def load_ranges(list_file: str | os.PathLike[str]) -> npt.NDArray[np.int64]:
    """Read ``offset length`` pairs (bytes; whitespace or comma separated, ``#`` comments)."""
    p = os.fspath(list_file)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file or directory") from None
    except IsADirectoryError:
        raise UsageError(f"{p}: is a directory") from None
    except PermissionError:
        raise UsageError(f"{p}: permission denied") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: cannot read list: {e}") from None
    rows: list[tuple[int, int]] = []
    for n, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].replace(",", " ").split()
        if not body:
            continue
        if len(body) != 2 or not all(t.isdigit() for t in body):
            raise UsageError(f"{p}:{n}: expected 'offset length' (two whole numbers of bytes)")
        rows.append((int(body[0]), int(body[1])))
    if not rows:
        raise UsageError(f"{p}: the list has no (offset, length) entries")
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _check_ranges(path: str, ranges: npt.NDArray[np.int64], file_size: int) -> None:
    if len(ranges) == 0:
        raise UsageError(f"{path}: the operation list is empty")
    off, ln = ranges[:, 0], ranges[:, 1]
    bad = np.flatnonzero((off < 0) | (ln <= 0) | (off > file_size - ln))
    if len(bad):
        o, n = int(off[bad[0]]), int(ln[bad[0]])
        raise UsageError(
            f"{path}: list entry {int(bad[0]) + 1} ({o}, {n}) is not inside the file "
            f"({file_size} bytes)"
        )


def _residency(d: dict[str, Any]) -> Residency:
    return int(d["pages"]) if d["trusted"] else "untrusted"


def latency_of(durations_ns: npt.NDArray[np.int64]) -> Latency:
    """min/p50/p90/p99/p99.9/max/mean of per-operation durations (ns)."""
    if len(durations_ns) == 0:
        nan = math.nan
        return Latency(min=nan, p50=nan, p90=nan, p99=nan, p999=nan, max=nan, mean=nan)
    q = np.percentile(durations_ns, [0, 50, 90, 99, 99.9, 100])
    v = [float(x) for x in q]
    return Latency(
        min=v[0], p50=v[1], p90=v[2], p99=v[3], p999=v[4], max=v[5], mean=float(durations_ns.mean())
    )


def probe(
    path: str | os.PathLike[str],
    pattern: str,
    *,
    block: int | None = None,
    stride: int | None = None,
    count: int | None = None,
    align: int | None = None,
    seed: int = 0,
    ranges: Sequence[tuple[int, int]] | npt.NDArray[np.int64] | None = None,
    threads: int = 1,
    fadvise: str | None = None,
    madvise: str | None = None,
    cold: bool = False,
    faults: bool = False,
    verify: str | None = None,
    file_id: int = 0,
    residency: str = "auto",
) -> ProbeResult:
    """Run ``pattern`` on the file at ``path`` and time every operation.

    ``block``/``stride``/``align`` in bytes, ``count`` operations (random patterns),
    ``ranges`` the (offset, length) list for ``replay``/``mmap-list``.  ``threads`` workers
    share one operation list (each operation is done once).  ``fadvise`` is applied to the
    whole file before the run, ``madvise`` to the mapping (mmap patterns).  ``cold`` evicts
    the file from the page cache first and checks it; ``faults`` counts minor/major faults
    per operation; ``verify`` (``"file"`` or ``"pattern"``) checks every byte read.
    ``cold`` first writes the file's dirty pages back (fdatasync), then evicts and counts:
    pages left (with trusted residency) raise MeasurementError and nothing is run.
    ``residency`` ``"auto"`` counts resident pages with cachestat where the kernel has it,
    ``"mincore"`` always with mincore.  ``file_id`` goes into every event.
    Raises UsageError (one line naming the file) on bad input.
    """
    p = os.fspath(path)
    size = check_file(p)
    prm = resolve_params(
        p, pattern, size, block=block, stride=stride, count=count, align=align, seed=seed
    )
    if threads < 1:
        raise UsageError(f"{p}: threads must be >= 1")
    if threads > MAX_THREADS:
        # each worker holds its own read buffer (block bytes) and a thread stack
        raise UsageError(f"{p}: threads must be <= {MAX_THREADS}, got {threads}")
    if fadvise is not None and fadvise not in FADVISE_HINTS:
        raise UsageError(
            f"{p}: unknown fadvise hint {fadvise!r} (valid: {', '.join(FADVISE_HINTS)})"
        )
    if madvise is not None:
        if madvise not in MADVISE_HINTS:
            raise UsageError(
                f"{p}: unknown madvise hint {madvise!r} (valid: {', '.join(MADVISE_HINTS)})"
            )
        if not pattern.startswith("mmap-"):
            raise UsageError(f"{p}: madvise applies to mmap patterns only, not {pattern!r}")
    if verify is not None and verify not in VERIFY_MODES:
        raise UsageError(f"{p}: unknown verify mode {verify!r} (valid: file, pattern)")
    if residency not in ("auto", "mincore"):
        raise UsageError(f"{p}: unknown residency method {residency!r} (valid: auto, mincore)")
    arr: npt.NDArray[np.int64] | None = None
    if ranges is not None and pattern not in LIST_PATTERNS:
        raise UsageError(f"{p}: a list of (offset, length) applies to replay and mmap-list only")
    if pattern in LIST_PATTERNS:
        if ranges is None:
            raise UsageError(f"{p}: pattern {pattern!r} needs a list of (offset, length)")
        arr = np.ascontiguousarray(np.asarray(ranges, dtype=np.int64).reshape(-1, 2))
        _check_ranges(p, arr, size)
    try:
        raw, info = _native.probe_run(
            p,
            pattern,
            prm.block,
            prm.stride,
            prm.count,
            prm.align,
            prm.seed,
            arr,
            threads,
            fadvise or "",
            madvise or "",
            cold,
            faults,
            verify or "",
            file_id,
            residency,
        )
    except PermissionError:
        raise UsageError(f"{p}: permission denied") from None
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file or directory") from None
    except OSError as e:
        where = e.filename or p
        raise UsageError(f"{where}: {os.strerror(e.errno or 0).lower()}") from None
    except ValueError as e:
        msg = str(e)
        raise UsageError(msg if msg.startswith(p + ":") else f"{p}: {msg}") from None
    if not info["ran"]:
        dirty = int(info["cold_dirty_pages"])
        why = f" ({dirty} dirty or under writeback)" if dirty > 0 else ""
        raise MeasurementError(
            f"{p}: cold run refused: {int(info['cold_left_pages'])} of "
            f"{-(-size // PAGE_SIZE)} pages still in the page cache after fdatasync "
            f"({info['cold_flush']}) and eviction{why}; is another process mapping or "
            "writing it?"
        )
    events: Events = raw.view(EVENT_DTYPE)
    st = os.stat(p)
    entry = FileEntry(file_id, os.path.abspath(p), int(info["file_size"]), st.st_dev, st.st_ino)
    return ProbeResult(
        file=entry,
        events=events,
        summary=_summarise(p, pattern, prm, info, events, cold, faults, verify, arr),
    )


def _summarise(
    path: str,
    pattern: str,
    prm: PatternParams,
    info: dict[str, Any],
    ev: Events,
    cold: bool,
    faults: bool,
    verify: str | None,
    ranges: npt.NDArray[np.int64] | None,
) -> ProbeSummary:
    wall = int(info["t_end_ns"]) - int(info["t_begin_ns"])
    got = ev["result"]
    nbytes = int(got[got > 0].sum())
    before, after = info["residency_before"], info["residency_after"]
    trusted = bool(before["trusted"])
    params: dict[str, Any] = asdict(prm)
    if ranges is not None:
        params["list_entries"] = len(ranges)
    return ProbeSummary(
        path=path,
        pattern=pattern,
        file_size=int(info["file_size"]),
        ops=len(ev),
        bytes=nbytes,
        wall_ns=wall,
        throughput_bps=nbytes * 1e9 / wall if wall > 0 else math.nan,
        iops=len(ev) * 1e9 / wall if wall > 0 else math.nan,
        latency_ns=latency_of(ev["duration_ns"]),
        minflt=int(ev["minflt"].sum()) if faults else None,
        majflt=int(ev["majflt"].sum()) if faults else None,
        residency_before=_residency(before),
        residency_after=_residency(after),
        residency_method=str(before["method"]),
        total_pages=int(before["total_pages"]),
        cold=cold,
        cold_evicted=bool(info["cold_evicted"]) if cold and trusted else None,
        cold_left_pages=int(info["cold_left_pages"]) if cold and trusted else None,
        cold_dirty_pages=(
            int(info["cold_dirty_pages"])
            if cold and trusted and int(info["cold_dirty_pages"]) >= 0
            else None
        ),
        cold_flush=str(info["cold_flush"]) if cold else None,
        hints=[str(h) for h in info["hints"]],
        threads=int(info["threads"]),
        failed_ops=int(info["failed_ops"]),
        ops_done=int(info["ops_done"]),
        verify=verify,
        verify_bad_ops=int(info["verify_bad_ops"]) if verify else None,
        verify_bad_bytes=int(info["verify_bad_bytes"]) if verify else None,
        params=params,
    )


def plan(
    pattern: str,
    file_size: int,
    *,
    block: int,
    stride: int = 0,
    count: int = 0,
    align: int = 0,
    seed: int = 0,
    ranges: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """The (n, 2) array of (offset, length) the native engine plans for a pattern."""
    arr = None if ranges is None else np.ascontiguousarray(ranges, dtype=np.int64).reshape(-1, 2)
    return _native.probe_plan(pattern, file_size, block, stride, count, align, seed, PAGE_SIZE, arr)
