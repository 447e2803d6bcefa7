"""ONNX Runtime's own account of a session, on CLOCK_MONOTONIC.

Two sources, both ONNX Runtime's:

- the **profile** (``SessionOptions.enable_profiling``): a JSON list of trace events whose
  ``ts``/``dur`` are microseconds since the profiler started; ``model_loading_uri`` and
  ``session_initialization`` (category ``Session``), ``model_run`` per run, node kernels.
  For ``.ort`` models there is no loading event: ``model_loading`` (source "derived") is then
  the part of the session's creation before ``session_initialization``.
  The profiler's start is ``InferenceSession.get_profiling_start_time_ns()``: nanoseconds of
  ``std::chrono::high_resolution_clock``, which is the system clock (CLOCK_REALTIME) in
  libstdc++.
- the **log** at INFO level (stderr): lines stamped ``YYYY-MM-DD HH:MM:SS.nnnnnnnnn`` in local
  time.  ONNX Runtime reports no sub-phases of ``session_initialization`` in its profile,
  but it logs their boundaries: ``Initializing session.``, ``Saving initialized tensors.``,
  ``Done saving initialized tensors``, ``Session successfully initialized.``  Between them lie
  graph transformation and partitioning (``graph_and_kernels``), the initializers being
  placed (``save_initializers``: embedded ones copied, external ones mapped) and the rest of
  finalisation, where weight pre-packing reads the weights (``prepack_and_finalize``).

**Alignment.** The runner measures ``offset = CLOCK_REALTIME - CLOCK_MONOTONIC`` with the
tightest of 25 bracketed readings (the uncertainty is half the bracket, typically < 1 µs)
right before the session is created; a system-clock instant ``r`` is then the monotonic
``r - offset``.  Profile times keep the profiler's microsecond resolution.  The result is
checked: the aligned ``model_loading_uri`` must start inside the runner's own ``session``
mark, and the log's ``Initializing session.`` must fall within 5 ms of the profile's
``session_initialization`` start (the log's local-time stamps are converted with the local
time zone); a log that does not agree is dropped with a note, never silently misplaced.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError

LOG_LINE = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(?P<frac>\d+) \[(?P<sev>[VIWEF]):onnxruntime:"
    r"[^\]]*\] (?P<msg>.*)$"
)
# Log messages that bound the sub-phases of session_initialization, in order.
SUBPHASE_MARKERS = (
    ("Initializing session.", "graph_and_kernels"),
    ("Saving initialized tensors.", "save_initializers"),
    ("Done saving initialized tensors", "prepack_and_finalize"),
    ("Session successfully initialized.", None),
)
LOG_TOLERANCE_NS = 5_000_000


@dataclass(frozen=True)
class OrtPhase:
    """A phase ONNX Runtime reported: name, depth (0 = top), CLOCK_MONOTONIC bounds in ns."""

    name: str
    depth: int
    start_ns: int
    end_ns: int
    source: str  # "runner", "profile" or "log"


def realtime_to_monotonic(realtime_ns: int, offset_ns: int) -> int:
    """A CLOCK_REALTIME instant as CLOCK_MONOTONIC, given ``offset = REALTIME - MONOTONIC``."""
    return realtime_ns - offset_ns


def parse_profile(path: str | Path, start_realtime_ns: int, offset_ns: int) -> list[dict[str, Any]]:
    """Events of ONNX Runtime's profile with ``start_ns``/``end_ns`` on CLOCK_MONOTONIC."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot read ONNX Runtime's profile: {err}") from None
    if not isinstance(doc, list):
        raise UsageError(f"{path}: ONNX Runtime's profile is not a list of events")
    base = realtime_to_monotonic(start_realtime_ns, offset_ns)
    out = []
    for e in doc:
        if not isinstance(e, dict) or e.get("ph") != "X":
            continue
        ts, dur = int(e.get("ts", 0)), int(e.get("dur", 0))
        out.append(
            {
                "name": str(e.get("name", "")),
                "cat": str(e.get("cat", "")),
                "start_ns": base + ts * 1000,
                "end_ns": base + (ts + dur) * 1000,
                "args": e.get("args", {}),
            }
        )
    return out


def parse_log_time(date: str, frac: str) -> int:
    """A log stamp (local time, fraction of a second with up to 9 digits) as CLOCK_REALTIME ns."""
    secs = int(time.mktime(time.strptime(date, "%Y-%m-%d %H:%M:%S")))
    return secs * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def parse_log(text: str) -> list[tuple[int, str, str]]:
    """(CLOCK_REALTIME ns, severity, message) of every ONNX Runtime log line in ``text``."""
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line.strip())
        if m:
            out.append((parse_log_time(m["date"], m["frac"]), m["sev"], m["msg"]))
    return out


def ort_phases(
    runner: dict[str, Any], log_text: str, notes: list[str]
) -> tuple[list[OrtPhase], list[dict[str, Any]]]:
    """The phases of one runner result: the runner's marks (depth 0), the profile's
    ``model_loading_uri`` / ``session_initialization`` (depth 1) and the log's sub-phases of
    session_initialization (depth 2); plus the profile's events (``model_run``, nodes).

    ``notes`` receives a line for anything that could not be aligned.
    """
    phases = [
        OrtPhase(m["name"], 0, int(m["start_ns"]), int(m["end_ns"]), "runner")
        for m in runner.get("marks", [])
    ]
    session = next((p for p in phases if p.name == "session"), None)
    events: list[dict[str, Any]] = []
    offset = int(runner["clock"]["realtime_minus_monotonic_ns"])
    prof = runner.get("profile_file")
    init: dict[str, Any] | None = None
    if prof and session is not None:
        events = parse_profile(prof, int(runner["profiling_start_realtime_ns"]), offset)
        for e in events:
            if e["cat"] == "Session" and e["name"] in (
                "model_loading_uri",
                "session_initialization",
            ):
                phases.append(OrtPhase(e["name"], 1, e["start_ns"], e["end_ns"], "profile"))
                if e["name"] == "session_initialization":
                    init = e
        load = next((p for p in phases if p.name == "model_loading_uri"), None)
        if load is None and init is not None and session.start_ns < init["start_ns"]:
            # .ort models: ONNX Runtime profiles no loading phase; it is what precedes
            # session_initialization inside the session's creation.
            phases.append(
                OrtPhase("model_loading", 1, session.start_ns, int(init["start_ns"]), "derived")
            )
        # One microsecond of slack each side: the profile's resolution.
        if load is not None and not (
            session.start_ns - 1000 <= load.start_ns <= session.end_ns + 1000
        ):
            notes.append(
                "ONNX Runtime's profile does not line up with the session it profiled "
                f"(model_loading_uri starts {load.start_ns - session.start_ns} ns from the "
                "session's start): profile phases dropped"
            )
            phases = [p for p in phases if p.source != "profile"]
            events, init = [], None
    if init is not None and log_text:
        phases.extend(_log_subphases(log_text, offset, init, notes))
    phases = _nest(phases)
    phases.sort(key=lambda p: (p.start_ns, p.depth))
    return phases, events


def _nest(phases: list[OrtPhase]) -> list[OrtPhase]:
    """Clamp each phase into the enclosing phase one level up (the profile's microsecond
    rounding can overhang the runner's nanosecond marks by less than a microsecond)."""
    out = [p for p in phases if p.depth == 0]
    for depth in (1, 2):
        parents = [p for p in out if p.depth == depth - 1]
        for p in (q for q in phases if q.depth == depth):
            mid = (p.start_ns + p.end_ns) // 2
            parent = next((q for q in parents if q.start_ns <= mid <= q.end_ns), None)
            if parent is None:
                out.append(p)
                continue
            s = min(max(p.start_ns, parent.start_ns), parent.end_ns)
            e = min(max(p.end_ns, s), parent.end_ns)
            out.append(OrtPhase(p.name, p.depth, s, e, p.source))
    return out


def _log_subphases(
    log_text: str, offset: int, init: dict[str, Any], notes: list[str]
) -> list[OrtPhase]:
    stamps: dict[str, int] = {}
    for rt, _sev, msg in parse_log(log_text):
        for marker, _name in SUBPHASE_MARKERS:
            if msg.startswith(marker) and marker not in stamps:
                stamps[marker] = realtime_to_monotonic(rt, offset)
    if len(stamps) != len(SUBPHASE_MARKERS):
        missing = [m for m, _ in SUBPHASE_MARKERS if m not in stamps]
        notes.append(
            f"ONNX Runtime's log lacks {missing[0]!r}: no sub-phases of session_initialization"
        )
        return []
    first = stamps[SUBPHASE_MARKERS[0][0]]
    if abs(first - int(init["start_ns"])) > LOG_TOLERANCE_NS:
        notes.append(
            "ONNX Runtime's log time stamps do not agree with its profile "
            f"({(first - int(init['start_ns'])) / 1e6:.1f} ms apart; time zone?): "
            "sub-phases of session_initialization dropped"
        )
        return []
    out = []
    for (marker, name), (nxt, _) in itertools.pairwise(SUBPHASE_MARKERS):
        if name is None:
            continue
        start, end = stamps[marker], stamps[nxt]
        if end < start:
            notes.append(f"ONNX Runtime's log: {marker!r} after {nxt!r}: sub-phases dropped")
            return []
        out.append(OrtPhase(name, 2, start, end, "log"))
    return out
