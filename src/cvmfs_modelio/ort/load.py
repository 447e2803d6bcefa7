"""One model load, measured from every side: :func:`run_load` (``cvmfs-modelio ort-load``).

For each repetition: the model's files are put into the cache state (:mod:`.state`), kernel
tracepoints are armed (:mod:`cvmfs_modelio.trace.tracefs`), and a fresh child
(:mod:`.runner`) loads the model under the LD_PRELOAD tracer: weights (loader), session,
first and second run.  Afterwards ONNX Runtime's profile and log (:mod:`.profile`), the
tracer's events, the kernel's page-cache and FUSE events, and (on CVMFS) the client's chunk
downloads (:mod:`cvmfs_modelio.trace.cache_fetches`) are joined per phase (:mod:`.join`)
and mapped to tensors (:mod:`.tensors`).  The trace directory of the first repetition can
be kept: it then also holds ``ort.cmtr`` (the phases, source ORT) and ``fetch.cmtr``.

Everything the child writes (ORT's profile, its log) goes to a temporary directory, never
to the file system being measured; the child runs in its own session and is killed with
its whole group on timeout or interrupt, so it never outlives the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.ort.join import PhaseRecord

LOADERS = ("ort", "safetensors-lazy", "safetensors-eager", "streamer")
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_CONCURRENCY = 16
DEFAULT_BLOCK = 2 << 20
MAX_REPEAT = 1000


@dataclass(frozen=True)
class LoadOptions:
    """How to load: loader, cache state, ONNX Runtime options, tracing.  Sizes in bytes."""

    loader: str = "ort"
    state: str = "cold"
    repeat: int = 1
    disable_prepacking: bool = False
    threads: int = 1
    mmap: bool | None = None  # None: ONNX Runtime's default for the format
    graph: str | None = None  # ONNX graph for the safetensors loaders
    tensors: tuple[str, ...] | None = None  # tensors the safetensors loaders read (None: all)
    concurrency: int = DEFAULT_CONCURRENCY
    block_bytes: int = DEFAULT_BLOCK
    trace: bool = True
    kernel: str = "auto"
    sample_us: int = 1000
    timeout_s: float = DEFAULT_TIMEOUT_S

    def validate(self) -> None:
        from cvmfs_modelio.ort.state import STATES

        if self.loader not in LOADERS:
            raise UsageError(f"--loader {self.loader}: must be one of {', '.join(LOADERS)}")
        if self.state not in STATES:
            raise UsageError(f"--state {self.state}: must be one of {', '.join(STATES)}")
        if not 1 <= self.repeat <= MAX_REPEAT:
            raise UsageError(f"--repeat {self.repeat}: must be in [1, {MAX_REPEAT}]")
        if not 1 <= self.threads <= 1024:
            raise UsageError(f"--threads {self.threads}: must be in [1, 1024]")
        if not 1 <= self.concurrency <= 1024:
            raise UsageError(f"--concurrency {self.concurrency}: must be in [1, 1024]")
        if not 4096 <= self.block_bytes <= 1 << 30:
            raise UsageError(f"--block {self.block_bytes}: must be in [4 KiB, 1 GiB]")
        if self.kernel not in ("auto", "on", "off"):
            raise UsageError(f"--kernel {self.kernel}: must be auto, on or off")
        if self.sample_us < 0:
            raise UsageError(f"--sample-us {self.sample_us}: must be >= 0")
        if not 0 < self.timeout_s <= 86400:
            raise UsageError(f"--timeout {self.timeout_s}: must be in (0, 86400] s")


@dataclass
class RunRecord:
    """One repetition: its phases (ns, bytes), cache state, client counters, fetches."""

    rep: int
    pid: int  # the measured child's
    state: dict[str, Any]
    phases: list[PhaseRecord]
    time_to_first_inference_ns: int | None
    totals: dict[str, int]
    counters_delta: dict[str, int] | None
    fetch: dict[str, Any] | None
    tensor_first_touch: list[dict[str, Any]]
    kernel: str
    loader_info: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def phase(self, name: str) -> PhaseRecord | None:
        return next((p for p in self.phases if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = [p.to_dict() for p in self.phases]
        return d


@dataclass
class LoadResult:
    """Every repetition of one load, and the medians of its phases."""

    model: str
    files: list[dict[str, Any]]
    location: str
    mount: str | None
    options: dict[str, Any]
    onnxruntime: str | None
    runs: list[RunRecord]
    trace_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    def medians(self) -> list[dict[str, Any]]:
        """Per phase (in order): medians over the repetitions of every number."""
        names: list[tuple[str, int]] = []
        for r in self.runs:
            for p in r.phases:
                if (p.name, p.depth) not in names:
                    names.append((p.name, p.depth))
        out = []
        keys = [
            k for k, v in PhaseRecord("", 0, "", 0, 0, 0).to_dict().items() if isinstance(v, int)
        ]
        keys = [k for k in keys if k not in ("depth", "start_ns", "end_ns")]
        for name, depth in names:
            recs = [p for r in self.runs for p in r.phases if p.name == name and p.depth == depth]
            row: dict[str, Any] = {"name": name, "depth": depth, "reps": len(recs)}
            for k in keys:
                row[k] = round(statistics.median(getattr(p, k) for p in recs))
            row["top_tensors"] = recs[0].top_tensors
            out.append(row)
        return out

    def time_to_first_inference_ns(self) -> int | None:
        vals = [r.time_to_first_inference_ns for r in self.runs if r.time_to_first_inference_ns]
        return round(statistics.median(vals)) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "files": self.files,
            "location": self.location,
            "mount": self.mount,
            "options": self.options,
            "onnxruntime": self.onnxruntime,
            "time_to_first_inference_ns": self.time_to_first_inference_ns(),
            "medians": self.medians(),
            "runs": [r.to_dict() for r in self.runs],
            "trace_dir": self.trace_dir,
            "notes": self.notes,
        }


# ------------------------------------------------------------------ the model's files


@dataclass(frozen=True)
class ModelFiles:
    """What the child opens (``model``, ``graph``) and every file of the load (real paths)."""

    model: Path
    graph: Path | None
    files: tuple[Path, ...]
    tensor_files: tuple[Path, ...]  # files whose tensors the map covers


def _external_data(onnx_path: Path) -> list[Path]:
    """External data files an ``.onnx`` names (existing ones); [] when it cannot be parsed
    (ONNX Runtime then reports its own reason).  A location outside the model's directory
    is refused (UsageError naming it) before ONNX Runtime could follow it."""
    from cvmfs_modelio.models.formats.onnx import external_files

    return [
        Path(os.path.realpath(p)) for p in external_files(onnx_path, strict=False) if p.is_file()
    ]


def resolve_model(model: Path, opts: LoadOptions, display: dict[str, str]) -> ModelFiles:
    """The files of a load; UsageError naming the user's file for what cannot work."""
    name = display.get(str(model), str(model))
    if model.is_dir():
        raise UsageError(f"{name}: is a directory (give the model file)")
    if not model.is_file():
        raise UsageError(f"{name}: no such model file")
    real = Path(os.path.realpath(model))
    if opts.loader == "ort":
        if model.suffix not in (".onnx", ".ort"):
            raise UsageError(
                f"{name}: unsupported format {model.suffix or '(no suffix)'} for --loader ort "
                "(needs .onnx or .ort; safetensors: --loader safetensors-lazy/-eager/streamer)"
            )
        ext = _external_data(model) if model.suffix == ".onnx" else []
        if opts.mmap is True and model.suffix == ".onnx" and not ext:
            raise UsageError(
                f"{name}: --use-mmap: ONNX Runtime cannot map weights embedded in an .onnx "
                "(it parses them from the protobuf); use external data or .ort"
            )
        # the model's map covers its external data (models.inspect reads the model's names)
        return ModelFiles(model, model, (real, *ext), (real,))
    if model.suffix != ".safetensors":
        raise UsageError(f"{name}: --loader {opts.loader} needs a .safetensors file")
    if opts.mmap is not None:
        raise UsageError(
            f"--use-mmap/--no-mmap: not an option of --loader {opts.loader} "
            "(safetensors-lazy always maps, -eager and streamer always read)"
        )
    graph: Path | None = None
    if opts.tensors and opts.graph:
        raise UsageError(
            "--tensors with --graph: a graph needs all its weights (give one or the other)"
        )
    if opts.tensors:
        pass  # only some tensors: nothing to run them with
    elif opts.graph:
        graph = Path(opts.graph)
        if not graph.is_file():
            raise UsageError(f"--graph {opts.graph}: no such file")
    else:
        sibling = model.with_suffix(".onnx")
        graph = sibling if sibling.is_file() else None
    files = [real] + ([Path(os.path.realpath(graph))] if graph else [])
    return ModelFiles(model, graph, tuple(files), (real,))


# ------------------------------------------------------------------ error messages


def _clean_message(msg: str, display: dict[str, str]) -> str:
    """ONNX Runtime's (or Python's) message with every temporary or mount path replaced by
    the user's, and ONNX Runtime's ``[ONNXRuntimeError] : N : `` prefix dropped."""
    import re

    msg = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", msg.strip())
    for real, user in sorted(display.items(), key=lambda kv: -len(kv[0])):
        msg = msg.replace(real, user)
    m = re.match(r"^(\w+) : Load model from .*? failed:\s*(.*)$", msg)
    if m:
        msg = f"{m[1]}: {m[2]}"
    msg = re.sub(r"^([A-Z_]+) : ", r"\1: ", msg)
    return " ".join(msg.split())


# ------------------------------------------------------------------ one repetition


def _display_map(model: Path, display_name: str | None, files: Sequence[Path]) -> dict[str, str]:
    """Real and given paths of the load's files -> what the user calls them."""
    user_model = display_name or str(model)
    out = {str(model): user_model, os.path.abspath(model): user_model}
    out[os.path.realpath(model)] = user_model
    base_user = os.path.dirname(user_model)
    base_real = os.path.dirname(os.path.realpath(model))
    for f in files:
        rel = os.path.relpath(f, base_real)
        if not rel.startswith(".."):
            out[str(f)] = os.path.join(base_user, rel) if base_user else rel
    out[base_real] = base_user or "."
    return out


def _spawn_child(
    argv: list[str], env: dict[str, str] | None, cwd: Path, stderr_path: Path
) -> subprocess.Popen[bytes]:
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=30)


def _run_child(
    spec: dict[str, Any],
    env: dict[str, str] | None,
    work: Path,
    timeout_s: float,
    name: str,
    loader: str,
) -> tuple[dict[str, Any], str, int]:
    """Run the runner; (its result, its stderr, its pid).  The group never outlives this."""
    argv = [sys.executable, "-m", "cvmfs_modelio.ort.runner", json.dumps(spec)]
    err_path = work / "child.stderr"
    proc = _spawn_child(argv, env, work, err_path)
    try:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise UsageError(f"{name}: {loader} did not finish within {timeout_s:g} s") from None
    except BaseException:
        _kill_group(proc)
        raise
    # Threads or children the runner left behind go with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    stderr = err_path.read_text(errors="replace")
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    doc: dict[str, Any] | None = None
    if lines:
        with contextlib.suppress(ValueError):
            doc = json.loads(lines[-1])
    if doc is None:
        tail = [ln for ln in stderr.splitlines() if ln.strip()]
        why = tail[-1] if tail else f"exit status {proc.returncode}"
        raise UsageError(f"{name}: the {loader} child failed: {why}")
    return doc, stderr, proc.pid


def run_load(
    model: str | os.PathLike[str],
    *,
    state: str = "cold",
    loader: str = "ort",
    repeat: int = 1,
    disable_prepacking: bool = False,
    threads: int = 1,
    mmap: bool | None = None,
    graph: str | None = None,
    tensors: Sequence[str] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    block_bytes: int = DEFAULT_BLOCK,
    trace: bool = True,
    kernel: str = "auto",
    sample_us: int = 1000,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    trace_dir: str | os.PathLike[str] | None = None,
    display_name: str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> LoadResult:
    """Load ``model`` ``repeat`` times in fresh children and measure every phase.

    ``state``: cold, warm or hot (see :mod:`.state`); ``loader``: one of :data:`LOADERS`;
    ``mmap``: None for ONNX Runtime's default, True/False to force (``.ort``: its memory-
    mapped mode; ``.onnx`` external data: False reads it instead of mapping); ``trace``:
    False times the phases only (no tracer, no profiler); ``trace_dir``: keep the first
    repetition's trace there; ``display_name``: how messages name the model (the user's
    path, never a temporary or mount path).  Bad input raises UsageError with one line.
    """
    opts = LoadOptions(
        loader=loader,
        state=state,
        repeat=repeat,
        disable_prepacking=disable_prepacking,
        threads=threads,
        mmap=mmap,
        graph=graph,
        tensors=tuple(tensors) if tensors else None,
        concurrency=concurrency,
        block_bytes=block_bytes,
        trace=trace,
        kernel=kernel,
        sample_us=sample_us,
        timeout_s=timeout_s,
    )
    opts.validate()
    path = Path(os.path.abspath(os.fspath(model)))
    display = _display_map(path, display_name, [])
    mf = resolve_model(path, opts, display)
    display = _display_map(path, display_name, mf.files)
    name = display[str(path)]
    keep = Path(trace_dir) if trace_dir is not None else None
    if keep is not None:
        from cvmfs_modelio.trace.launch import prepare_trace_dir

        if not opts.trace:
            raise UsageError("a trace directory needs tracing (trace=True)")
        prepare_trace_dir(keep)
    from cvmfs_modelio.mounts import find_mount, open_mount

    mount = None
    with contextlib.suppress(UsageError):
        find_mount(path)
        mount = open_mount(path)
    tensor_map = None
    notes: list[str] = []
    if opts.trace:
        from cvmfs_modelio.models.inspect import build_map, inspect_model

        maps = []
        for f in mf.tensor_files:
            try:
                maps.append(inspect_model(f))
            except UsageError as e:
                notes.append(f"no tensor map for {display.get(str(f), str(f))}: {e}")
        tensor_map = (
            maps[0]
            if len(maps) == 1
            else build_map(
                "none" if not maps else "mixed",
                path,
                sorted({fs.path for m in maps for fs in m.files}),
                [t for m in maps for t in m.tensors],
            )
        )
    runs: list[RunRecord] = []
    ort_version = None
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-load-", dir=work_dir) as tmp:
        work = Path(tmp)
        for rep in range(opts.repeat):
            tdir = keep if (keep is not None and rep == 0) else None
            rec, ver = _one_rep(rep, mf, opts, mount, display, name, work, tdir, tensor_map)
            ort_version = ver or ort_version
            runs.append(rec)
    return LoadResult(
        model=name,
        files=[
            {"path": display.get(str(f), str(f)), "size_bytes": f.stat().st_size} for f in mf.files
        ],
        location="local" if mount is None else mount.kind,
        mount=None if mount is None else str(mount.root),
        options=asdict(opts),
        onnxruntime=ort_version,
        runs=runs,
        trace_dir=str(keep) if keep is not None else None,
        notes=notes,
    )


def _one_rep(
    rep: int,
    mf: ModelFiles,
    opts: LoadOptions,
    mount: Any,
    display: dict[str, str],
    name: str,
    work: Path,
    keep: Path | None,
    tensor_map: Any,
) -> tuple[RunRecord, str | None]:
    from cvmfs_modelio.core.clocks import realtime_minus_monotonic
    from cvmfs_modelio.ort import state as cache_state
    from cvmfs_modelio.trace import tracefs
    from cvmfs_modelio.trace.launch import traced_env

    rdir = work / f"rep{rep}"
    rdir.mkdir()
    tdir = keep if keep is not None else rdir / "trace"
    tdir.mkdir(exist_ok=True)
    prof_dir = rdir / "profile"
    prof_dir.mkdir()
    notes: list[str] = []
    st = cache_state.prepare(opts.state, mf.files, mount, display)
    notes.extend(st.notes)
    spec = {
        "loader": opts.loader,
        "model": str(mf.model),
        "graph": str(mf.graph) if mf.graph else None,
        "tensors": list(opts.tensors) if opts.tensors else None,
        "threads": opts.threads,
        "disable_prepacking": opts.disable_prepacking,
        "mmap": opts.mmap,
        "concurrency": opts.concurrency,
        "block_bytes": opts.block_bytes,
        "profile": opts.trace,
        "profile_dir": str(prof_dir),
        "runs": 2,
    }
    env: dict[str, str] | None = None
    rec: tracefs.KernelRecorder | None = None
    if opts.trace:
        env = traced_env(tdir, [str(f) for f in mf.files], opts.sample_us)
        if opts.kernel == "off":
            tracefs.write_status(tdir, {"status": "off", "reason": "disabled (kernel=off)"})
        else:
            reason = tracefs.unavailable_reason()
            if reason is None:
                try:
                    rec = tracefs.KernelRecorder(tdir, [str(f) for f in mf.files])
                    rec.start()
                except tracefs.KernelUnavailable as e:
                    reason, rec = str(e), None
            if reason is not None:
                if opts.kernel == "on":
                    raise UsageError(f"kernel tracepoints unavailable: {reason}")
                tracefs.write_status(tdir, {"status": "unavailable", "reason": reason})
                notes.append(f"kernel tracepoints unavailable ({reason}): no FUSE request times")
    try:
        before = mount.counters() if mount is not None else None
        offset, _unc = realtime_minus_monotonic()
        spawn_ns = time.monotonic_ns()
        doc, stderr, pid = _run_child(spec, env, rdir, opts.timeout_s, name, opts.loader)
        end_ns = time.monotonic_ns()
        if rec is not None:
            rec.stop(root_pid=pid)
    finally:
        if rec is not None:
            rec.remove()
    if not doc.get("ok"):
        why = _clean_message(str(doc.get("message", "")), display)
        err = str(doc.get("error", "error"))
        raise UsageError(f"{name}: {opts.loader} cannot load it: {why or err}")
    after = mount.counters() if mount is not None else None
    delta = None
    if before is not None and after is not None:
        delta = {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], int)}
        if opts.state == "cold" and delta.get("fetch.n_downloads", 0) == 0:
            st.clean = False
            notes.append("cold run fetched nothing from the server: the client cache was not cold")
        if opts.state in ("warm", "hot") and delta.get("fetch.n_downloads", 0) > 0:
            notes.append(
                f"{opts.state} run fetched {delta['fetch.n_downloads']} objects: "
                "the client cache did not hold the whole model"
            )
    fetches = []
    if mount is not None:
        from cvmfs_modelio.trace.cache_fetches import chunk_fetches

        try:
            fetches = chunk_fetches(mount, list(mf.files), spawn_ns, end_ns, offset)
        except UsageError as e:
            notes.append(f"chunk downloads not known: {e}")
    record = _join(
        rep, doc, stderr, pid, spawn_ns, mf, opts, st, delta, fetches, tdir, tensor_map, notes
    )
    return record, doc.get("onnxruntime")


def _join(
    rep: int,
    doc: dict[str, Any],
    stderr: str,
    pid: int,
    spawn_ns: int,
    mf: ModelFiles,
    opts: LoadOptions,
    st: Any,
    delta: dict[str, int] | None,
    fetches: list[Any],
    tdir: Path,
    tensor_map: Any,
    notes: list[str],
) -> RunRecord:
    from cvmfs_modelio.ort.join import Joiner, union_ns
    from cvmfs_modelio.ort.profile import OrtPhase, ort_phases

    phases, _events = ort_phases(doc, stderr if opts.trace else "", notes)
    phases.insert(0, OrtPhase("startup", 0, spawn_ns, int(doc["ready_ns"]), "runner"))
    files = [str(f) for f in mf.files]
    records: list[PhaseRecord]
    kernel_line = "off (untraced run)"
    totals: dict[str, int] = {}
    first_touch: list[dict[str, Any]] = []
    if opts.trace:
        import numpy as np

        from cvmfs_modelio.core.events import EventLog, FileEntry, write_event_file
        from cvmfs_modelio.trace.tracefs import status_line
        from cvmfs_modelio.trace.tracer import read_trace

        _write_marks(tdir, phases, pid)
        log = read_trace(tdir)
        ids = {e.path: fid for fid, e in log.files.items()}
        table = dict(log.files)
        for f in files:
            if f not in ids:
                fid = max(table, default=-1) + 1
                s = os.stat(f)
                table[fid] = FileEntry(fid, f, s.st_size, s.st_dev, s.st_ino)
                ids[f] = fid
        if fetches:
            from cvmfs_modelio.trace.cache_fetches import fetch_events

            fev = fetch_events(fetches, ids, pid)
            used = {int(x) for x in np.unique(fev["file_id"])}
            write_event_file(
                tdir / "fetch.cmtr",
                EventLog(
                    fev,
                    {k: v for k, v in table.items() if k in used},
                    {
                        "source": "fetch",
                        "clock": "CLOCK_MONOTONIC",
                        "from": "client cache file times",
                    },
                ),
            )
            log = read_trace(tdir)
        kernel_line = status_line(log.meta.get("kernel"))
        j = Joiner(log, pid, files, tensor_map)
        records = [j.phase(p) for p in phases]
        totals = j.totals()
        first_touch = j.tensor_first_touches(phases)
        if j.pagein_source != "kernel":
            notes.append(f"paged-in bytes from {j.pagein_source}")
        if j.sampled_only_bytes:
            from cvmfs_modelio.core.units import fmt_bytes, fmt_ns

            notes.append(
                f"{fmt_bytes(j.sampled_only_bytes)} of mmap touches seen only by the page "
                f"sampler (mapped as whole large folios): timed to its window (up to "
                f"{fmt_ns(j.max_window_ns)}), or their page-cache insertion inside it"
            )
    else:
        records = [
            PhaseRecord(p.name, p.depth, p.source, p.start_ns, p.end_ns, p.end_ns - p.start_ns)
            for p in phases
        ]
    fetch = None
    if fetches:
        import numpy as np

        fs = np.array([c.start_ns for c in fetches], dtype=np.int64)
        fe = np.array([c.end_ns for c in fetches], dtype=np.int64)
        lo, hi = int(fs.min()), int(fe.max())
        busy = union_ns(fs, fe, lo, hi)
        total = int((fe - fs).sum())
        fetch = {
            "chunks": len(fetches),
            "bytes": int(sum(c.size for c in fetches)),
            "busy_ns": busy,
            "sum_ns": total,
            "mean_concurrency": round(total / busy, 3) if busy else None,
            "start_precision": "coarse clock tick (birth time)"
            if all(c.start_exact for c in fetches)
            else "start unknown for some (no birth time)",
        }
    start = next((p for p in phases if p.name in ("weights_load", "session")), None)
    first = next((p for p in phases if p.name == "first_run"), None)
    ttfi = first.end_ns - start.start_ns if start and first else None
    return RunRecord(
        rep=rep,
        pid=pid,
        state=st.to_dict(),
        phases=records,
        time_to_first_inference_ns=ttfi,
        totals=totals,
        counters_delta=delta,
        fetch=fetch,
        tensor_first_touch=first_touch,
        kernel=kernel_line,
        loader_info=dict(doc.get("loader_info") or {}),
        notes=notes,
    )


def _write_marks(tdir: Path, phases: Sequence[Any], pid: int) -> None:
    """The phases as events of source ORT (op MARK) in ``ort.cmtr``; ``aux`` indexes
    ``meta["marks"]`` (names), ``fd`` holds the depth."""
    from cvmfs_modelio.core.events import EventLog, Op, Source, empty_events, write_event_file

    ev = empty_events(len(phases))
    names = []
    for i, p in enumerate(phases):
        ev[i]["t_start_ns"] = p.start_ns
        ev[i]["duration_ns"] = p.end_ns - p.start_ns
        ev[i]["pid"] = pid
        ev[i]["tid"] = pid
        ev[i]["fd"] = p.depth
        ev[i]["aux"] = i
        ev[i]["source"] = int(Source.ORT)
        ev[i]["op"] = int(Op.MARK)
        names.append({"name": p.name, "depth": p.depth, "from": p.source})
    meta = {"source": "ort", "clock": "CLOCK_MONOTONIC", "marks": names, "pid": pid}
    write_event_file(tdir / "ort.cmtr", EventLog(ev, {}, meta))


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
