"""The campaign: how fast does ONNX Runtime load a model from CVMFS, per chunk configuration.

For each chunk configuration the models are published (``sim.publish``) into a store of
their own in a temporary directory, the store is served over HTTP (``sim.server``) and
mounted with the emulated client (``sim.mount.SimMount``) behind the user-space WAN
emulator (round-trip time and bandwidth).  Then, for every model, repeatedly:

- **cold**: client cache emptied and the page cache of every file dropped
  (``CvmfsMount.clear_caches``), then a fresh Python process creates an ONNX Runtime
  session and runs one inference (``cvmfs_modelio.ort.child``), optionally under the LD_PRELOAD
  tracer; the client's counters before and after give the objects and bytes fetched, the
  client cache tells which chunk objects were fetched;
- **warm**: the page cache of the files dropped with ``posix_fadvise(DONTNEED)``, client
  cache kept, the same child again.

Times in ns, sizes in bytes; each row carries the per-repetition values and their medians.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvmfs_modelio.chunks.layouts import Layout
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError

MiB = 1 << 20
DEFAULT_RTT_MS = 10.0
DEFAULT_BANDWIDTH = 100 * MiB
DEFAULT_REPS = 3
# Campaigns price fetched objects as the real client does (docs/simfs.md); the value is
# cvmfs_modelio.sim.mount.DEFAULT_PROFILE, spelled out so importing this module needs no FUSE.
CAMPAIGN_CLIENT_PROFILE = "cvmfs-2.12"
CHILD_TIMEOUT_S = 600.0
FUSE_DEVICE_ENV = "CVMFS_MODELIO_FUSE_DEVICE"  # where to look for /dev/fuse (tests point it away)


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class ChunkConfig:
    """How a store chunks its files: CVMFS min/avg/max in bytes, or unchunked (whole)."""

    label: str
    chunking: bool
    min_size: int = 0
    avg_size: int = 0
    max_size: int = 0

    @classmethod
    def chunked(cls, min_size: int, avg_size: int, max_size: int) -> ChunkConfig:
        return cls(_label(min_size, avg_size, max_size), True, min_size, avg_size, max_size)

    @classmethod
    def whole(cls) -> ChunkConfig:
        return cls("unchunked", False)


def _label(*sizes: int) -> str:
    if all(s % MiB == 0 for s in sizes):
        return "/".join(str(s // MiB) for s in sizes) + " MiB"
    return "/".join(units.fmt_bytes(s).replace(" ", "") for s in sizes)


DEFAULT_CONFIGS: tuple[ChunkConfig, ...] = (
    ChunkConfig.chunked(4 * MiB, 8 * MiB, 16 * MiB),
    ChunkConfig.chunked(1 * MiB, 2 * MiB, 4 * MiB),
    ChunkConfig.whole(),
)


def parse_configs(text: str) -> list[ChunkConfig]:
    """``4M/8M/16M,1M/2M/4M,whole``: comma-separated chunk specs (``parse_chunk_spec``).

    The emulated publisher cuts as CVMFS does, so an entry is ``MIN/AVG/MAX`` (or
    ``xor32:MIN/AVG/MAX``), or ``whole`` (``unchunked``): one object per file.
    """
    from cvmfs_modelio.chunks.layouts import parse_chunk_spec

    out: list[ChunkConfig] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise UsageError(f"--configs: empty entry in {text!r}")
        try:
            spec = parse_chunk_spec(part)
        except UsageError as e:
            raise UsageError(f"--configs: {e}") from None
        if spec.kind == "whole":
            out.append(ChunkConfig.whole())
        elif spec.kind == "xor32":
            out.append(ChunkConfig.chunked(spec.min_size, spec.avg_size, spec.max_size))
        else:
            raise UsageError(
                f"--configs: {part!r}: CVMFS publishes with MIN/AVG/MAX (xor32) or whole only"
            )
    labels = [c.label for c in out]
    if len(set(labels)) != len(labels):
        raise UsageError(f"--configs: {text!r} names a configuration twice")
    return out


@dataclass(frozen=True)
class ModelFiles:
    """A model to load: ``onnx`` (the file ORT opens) and every file published with it."""

    name: str
    onnx: Path
    files: tuple[Path, ...]


def external_data_files(onnx_path: Path) -> list[Path]:
    """Files named as external data by ``onnx_path`` (existing, next to it), sorted.

    A location outside the model's directory (absolute, ``..``, a symlink out) is refused
    naming it, so that no file outside the model's directory is ever published."""
    from cvmfs_modelio.models.formats.onnx import external_files

    out = []
    for p in external_files(onnx_path):
        if not p.is_file():
            raise UsageError(f"{onnx_path}: external data file {p.name} not found")
        out.append(p)
    return out


def model_from_path(path: str | os.PathLike[str]) -> ModelFiles:
    """A real model file (``.onnx``) and its external data files."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p}: is a directory (give the .onnx files)")
    if not p.is_file():
        raise UsageError(f"{p}: no such file or directory")
    files = (p.resolve(), *external_data_files(p))
    return ModelFiles(p.stem, p.resolve(), files)


def unique_names(models: Sequence[ModelFiles]) -> list[ModelFiles]:
    """Models renamed ``dir-stem`` (more parent directories as needed) where stems collide."""
    out = list(models)
    depth = 0
    while len({m.name for m in out}) != len(out) and depth < 8:
        depth += 1
        clash = {m.name for m in out if sum(o.name == m.name for o in out) > 1}
        out = [
            ModelFiles("-".join([*m.onnx.parent.parts[-depth:], m.onnx.stem]), m.onnx, m.files)
            if m.name in clash
            else m
            for m in out
        ]
    return out


def synthetic_models(workdir: Path, weight_bytes: int) -> list[ModelFiles]:
    """The demo's models: ``embedded.onnx`` and ``external.onnx`` + ``external.onnx.data``."""
    from cvmfs_modelio.models.synthetic import make_model

    emb = make_model(workdir / "embedded" / "embedded.onnx", weight_bytes)
    ext = make_model(workdir / "external" / "external.onnx", weight_bytes, external_data=True)
    out = [ModelFiles("embedded", emb.onnx, (emb.onnx,))]
    ext_files = (ext.onnx,) if ext.data is None else (ext.onnx, ext.data)
    out.append(ModelFiles("external", ext.onnx, ext_files))
    return out


@dataclass(frozen=True)
class CampaignParams:
    """Network and repetition settings: ``rtt_ms`` (ms), ``bandwidth`` (bytes/s, 0: none).

    ``client_profile``: how the emulated client prices each fetched object
    (``cvmfs-2.12``, calibrated against the real client, by default; docs/simfs.md).
    """

    configs: tuple[ChunkConfig, ...] = DEFAULT_CONFIGS
    rtt_ms: float = DEFAULT_RTT_MS
    bandwidth: int = DEFAULT_BANDWIDTH
    reps: int = DEFAULT_REPS
    trace: bool = False
    client_profile: str = CAMPAIGN_CLIENT_PROFILE

    def validate(self) -> None:
        if not self.configs:
            raise UsageError("--configs: no chunk configuration given")
        if self.reps < 1:
            raise UsageError(f"--reps: {self.reps} must be at least 1")
        if self.rtt_ms < 0:
            raise UsageError(f"--rtt-ms: {self.rtt_ms} is negative")
        if self.bandwidth < 0:
            raise UsageError(f"--bandwidth: {self.bandwidth} is negative")
        from cvmfs_modelio.sim.mount import CLIENT_PROFILES

        if self.client_profile not in CLIENT_PROFILES:
            raise UsageError(
                f"--client-profile: {self.client_profile!r} is not one of "
                f"{', '.join(CLIENT_PROFILES)}"
            )


# ------------------------------------------------------------------ results


@dataclass
class FileResult:
    """One published file of a model under one configuration (sizes in bytes)."""

    path: str  # repository path
    size_bytes: int
    chunks: int
    stored_bytes: int  # all its objects as stored (compressed)
    chunks_fetched_cold: list[int] = field(default_factory=list)  # indices, first cold rep
    chunks_touched: list[int] | None = None  # from the tracer (first cold rep), if traced


@dataclass
class Run:
    """One load: ``cache`` is ``cold`` or ``warm``; times in ns, sizes in bytes."""

    cache: str
    session_ns: int
    first_inference_ns: int
    objects_fetched: int
    fetched_bytes: int


@dataclass
class CampaignRow:
    """One (model, chunk configuration): medians of the repetitions plus every run."""

    model: str
    config: str
    model_bytes: int  # all files of the model
    chunks_total: int
    chunks_fetched: int  # chunk objects in the client cache after the first cold load
    chunks_touched: int | None  # chunks ORT read (tracer), if traced
    objects_fetched: int  # median over cold runs (fetch.n_downloads)
    fetched_bytes: int  # median over cold runs (download.sz_transferred_bytes)
    expected_bytes: int  # stored sizes of the fetched objects
    cold_session_ns: int
    cold_first_inference_ns: int
    warm_session_ns: int
    warm_first_inference_ns: int
    warm_objects_fetched: int  # max over warm runs
    warm_fetched_bytes: int  # max over warm runs
    files: list[FileResult]
    runs: list[Run]
    client_profile: str = CAMPAIGN_CLIENT_PROFILE  # as the mount reported it

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _median(values: Sequence[int]) -> int:
    return round(statistics.median(values))


# ------------------------------------------------------------------ FUSE availability


def fuse_unavailable_reason() -> str | None:
    """Why the emulated client cannot mount here, or None when it can.

    Checks root, the FUSE device (``$CVMFS_MODELIO_FUSE_DEVICE``, default ``/dev/fuse``),
    ``fusermount3`` and the installed ``cmio-simfs``.
    """
    from cvmfs_modelio.sim.mount import simfs_binary

    dev = os.environ.get(FUSE_DEVICE_ENV) or "/dev/fuse"
    if os.geteuid() != 0:
        return "not running as root (the emulated client mounts FUSE as root)"
    if not os.path.exists(dev):
        return f"{dev} does not exist (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    try:
        simfs_binary()
    except UsageError as e:
        return str(e)
    return None


# ------------------------------------------------------------------ the campaign


Progress = Callable[[str], None]


def stage_sources(models: Sequence[ModelFiles], dest: Path) -> dict[str, str]:
    """Hard-link (or copy) each model's files to ``dest/<name>/``; name -> repo path of .onnx."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UsageError(f"models: two models share a name ({', '.join(names)})")
    out: dict[str, str] = {}
    for m in models:
        d = dest / m.name
        d.mkdir(parents=True)
        base = m.onnx.parent
        for f in m.files:
            rel = os.path.relpath(f, base)
            if rel.startswith(".."):
                raise UsageError(f"{f}: external data outside the model's directory")
            target = d / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, target)
            except OSError:
                shutil.copyfile(f, target)
        out[m.name] = f"/{m.name}/{m.onnx.name}"
    return out


def _object_path(store: Path, hexhash: str) -> Path:
    d = store / "data" / hexhash[:2]
    hits = [p for p in d.glob(hexhash[2:] + "*") if p.name[: len(hexhash) - 2] == hexhash[2:]]
    if len(hits) != 1:
        raise UsageError(f"{d}: object {hexhash} found {len(hits)} times in the store")
    return hits[0]


def _cached(cache: Path, hexhash: str) -> bool:
    d = cache / hexhash[:2]
    return any(p.name.startswith(hexhash[2:]) for p in d.glob(hexhash[2:] + "*"))


def _child(model: Path, trace_dir: Path | None, mountpoint: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "cvmfs_modelio.ort.child", str(model)]
    env = None
    if trace_dir is not None:
        from cvmfs_modelio.trace.tracer import traced_env

        env = traced_env(trace_dir, [str(mountpoint)])
    try:
        r = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise UsageError(
            f"{model}: ONNX Runtime did not finish in {CHILD_TIMEOUT_S:.0f} s"
        ) from None
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        raise UsageError(lines[-1] if lines else f"{model}: ONNX Runtime exited {r.returncode}")
    doc: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return doc


def _touched(trace_dir: Path, mount_files: dict[Path, Layout]) -> dict[Path, list[int]]:
    """Chunks of each file that the traced process read (syscalls and mmap page-ins)."""
    from cvmfs_modelio.chunks.analysis import analyze, requests_from_events
    from cvmfs_modelio.trace.tracer import read_trace

    log = read_trace(trace_dir)
    out: dict[Path, list[int]] = {}
    for path, layout in mount_files.items():
        fids = [fid for fid, e in log.files.items() if e.path == str(path)]
        if not fids:
            out[path] = []
            continue
        touched: set[int] = set()
        for fid in fids:
            a = analyze(requests_from_events(log.events, layout.file_size, fid), layout)
            touched.update(int(c) for c in a.chunks_touched)
        out[path] = sorted(touched)
    return out


def _measure_model(
    model: ModelFiles,
    repo_onnx: str,
    config: ChunkConfig,
    mnt: Any,
    cache: Path,
    store: Path,
    params: CampaignParams,
    work: Path,
    progress: Progress,
) -> CampaignRow:
    """Cold and warm loads of one published model through the mount ``mnt`` (a CvmfsMount)."""
    onnx_path = mnt.locate(repo_onnx)
    files = [onnx_path.parent / os.path.relpath(f, model.onnx.parent) for f in model.files]
    layouts = {f: mnt.layout(f) for f in files}
    results: dict[Path, FileResult] = {}
    for f, lay in layouts.items():
        assert lay.hashes is not None
        stored = sum(_object_path(store, h).stat().st_size for h in lay.hashes)
        results[f] = FileResult(mnt.repo_path(f), lay.file_size, lay.n_chunks, stored)
    runs: list[Run] = []
    expected_bytes = 0
    for rep in range(params.reps):
        for cache_state in ("cold", "warm"):
            progress(f"{model.name} [{config.label}] {cache_state} {rep + 1}/{params.reps}")
            if cache_state == "cold":
                mnt.clear_caches(files)
                before = mnt.counters()
            else:
                # Counted from before the eviction: its open() would fetch a missing object.
                before = mnt.counters()
                mnt.drop_page_cache(files)
            traced = params.trace and cache_state == "cold" and rep == 0
            tdir = Path(tempfile.mkdtemp(prefix="trace-", dir=work)) if traced else None
            doc = _child(onnx_path, tdir, mnt.root)
            after = mnt.counters()
            objects = after["fetch.n_downloads"] - before["fetch.n_downloads"]
            nbytes = (
                after["download.sz_transferred_bytes"] - before["download.sz_transferred_bytes"]
            )
            runs.append(
                Run(cache_state, doc["session_ns"], doc["first_inference_ns"], objects, nbytes)
            )
            if cache_state == "cold" and rep == 0:
                for f, lay in layouts.items():
                    assert lay.hashes is not None
                    got = [i for i, h in enumerate(lay.hashes) if _cached(cache, h)]
                    results[f].chunks_fetched_cold = got
                    expected_bytes += sum(
                        _object_path(store, lay.hashes[i]).stat().st_size for i in got
                    )
                if tdir is not None:
                    for f, idx in _touched(tdir, layouts).items():
                        results[f].chunks_touched = idx
    cold = [r for r in runs if r.cache == "cold"]
    warm = [r for r in runs if r.cache == "warm"]
    fres = list(results.values())
    return CampaignRow(
        model=model.name,
        config=config.label,
        model_bytes=sum(r.size_bytes for r in fres),
        chunks_total=sum(r.chunks for r in fres),
        chunks_fetched=sum(len(r.chunks_fetched_cold) for r in fres),
        chunks_touched=(
            sum(len(r.chunks_touched) for r in fres if r.chunks_touched is not None)
            if params.trace
            else None
        ),
        objects_fetched=_median([r.objects_fetched for r in cold]),
        fetched_bytes=_median([r.fetched_bytes for r in cold]),
        expected_bytes=expected_bytes,
        cold_session_ns=_median([r.session_ns for r in cold]),
        cold_first_inference_ns=_median([r.first_inference_ns for r in cold]),
        warm_session_ns=_median([r.session_ns for r in warm]),
        warm_first_inference_ns=_median([r.first_inference_ns for r in warm]),
        warm_objects_fetched=max(r.objects_fetched for r in warm),
        warm_fetched_bytes=max(r.fetched_bytes for r in warm),
        files=fres,
        runs=runs,
    )


def run_campaign(
    models: Sequence[ModelFiles],
    params: CampaignParams | None = None,
    progress: Progress | None = None,
    workdir: str | os.PathLike[str] | None = None,
    out: list[CampaignRow] | None = None,
) -> list[CampaignRow]:
    """Measure every (model, configuration); one row each, in configuration order.

    Everything (sources, stores, client cache, mount points, traces) lives in a temporary
    directory (under ``workdir`` if given) that is removed afterwards; every mount is
    unmounted and every server stopped, also on error or interrupt.  Rows are appended to
    ``out`` (if given) as each is measured, so an interrupted caller keeps what was done.
    """
    from cvmfs_modelio.mounts import open_mount
    from cvmfs_modelio.sim.mount import MountOptions, SimMount, read_client_profile
    from cvmfs_modelio.sim.publish import PublishParams, publish
    from cvmfs_modelio.sim.server import serve

    params = params or CampaignParams()
    params.validate()
    if not models:
        raise UsageError("no models to measure")
    say = progress or (lambda _msg: None)
    rows: list[CampaignRow] = [] if out is None else out
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-campaign-", dir=workdir) as tmp:
        work = Path(tmp)
        src = work / "src"
        repo_onnx = stage_sources(models, src)
        cache = work / "cache"
        for ci, config in enumerate(params.configs):
            store = work / f"store{ci}"
            say(f"publishing [{config.label}]")
            pp = (
                PublishParams(config.min_size, config.avg_size, config.max_size)
                if config.chunking
                else PublishParams(chunking=False)
            )
            publish(src, store, pp)
            mp = work / f"mnt{ci}"
            mp.mkdir()
            opts = MountOptions(
                cache=cache,
                rtt_ms=params.rtt_ms,
                bandwidth=params.bandwidth,
                client_profile=params.client_profile,
            )
            with serve(store) as srv, SimMount(srv.url, mp, opts) as sm:
                mnt = open_mount(sm.path)
                profile = read_client_profile(sm.path)
                if profile != params.client_profile:
                    raise UsageError(
                        f"{sm.path}: the client runs profile {profile!r}, "
                        f"not {params.client_profile!r}"
                    )
                for m in models:
                    row = _measure_model(
                        m, repo_onnx[m.name], config, mnt, cache, store, params, work, say
                    )
                    row.client_profile = profile
                    rows.append(row)
            shutil.rmtree(store)
    return rows


# 2: units in keys (bandwidth_bytes_per_s, fetched_bytes, size_bytes, configs min_bytes...)
CAMPAIGN_SCHEMA_VERSION = 2


def campaign_payload(rows: Sequence[CampaignRow], params: CampaignParams) -> dict[str, Any]:
    """JSON document of a campaign (``jsonout.write_json`` adds the environment)."""
    return {
        "campaign": {
            "configs": [
                {
                    "label": c.label,
                    "chunking": c.chunking,
                    "min_bytes": c.min_size,
                    "avg_bytes": c.avg_size,
                    "max_bytes": c.max_size,
                }
                for c in params.configs
            ],
            "rtt_ms": params.rtt_ms,
            "bandwidth_bytes_per_s": params.bandwidth,
            "reps": params.reps,
            "traced": params.trace,
            "client": "cmio-simfs (emulated CVMFS), WAN emulated in user space",
            "client_profile": params.client_profile,
            "onnxruntime": _ort_version(),
        },
        "rows": [r.to_dict() for r in rows],
    }


def _ort_version() -> str | None:
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError:
        return None


HEADER = [
    "model",
    "chunks",
    "size",
    "chunks fetched/total",
    "objects fetched",
    "bytes on the wire",
    "cold session",
    "cold 1st inf",
    "warm session",
    "warm 1st inf",
    "warm objects fetched",
]


def format_rows(rows: Sequence[CampaignRow]) -> str:
    """The campaign table (times are medians over the repetitions)."""
    from cvmfs_modelio.core.tables import format_table

    body = []
    for r in rows:
        touched = f" (read {r.chunks_touched})" if r.chunks_touched is not None else ""
        body.append(
            [
                r.model,
                r.config,
                units.fmt_bytes(r.model_bytes),
                f"{r.chunks_fetched}/{r.chunks_total}{touched}",
                str(r.objects_fetched),
                units.fmt_bytes(r.fetched_bytes),
                units.fmt_ns(r.cold_session_ns),
                units.fmt_ns(r.cold_first_inference_ns),
                units.fmt_ns(r.warm_session_ns),
                units.fmt_ns(r.warm_first_inference_ns),
                str(r.warm_objects_fetched),
            ]
        )
    return format_table(HEADER, body)


def stderr_progress() -> Progress:
    """A progress printer for stderr: ``[campaign 12.3s] message``."""
    t0 = time.monotonic()

    def say(msg: str) -> None:
        sys.stderr.write(f"[campaign {time.monotonic() - t0:5.1f}s] {msg}\n")
        sys.stderr.flush()

    return say
