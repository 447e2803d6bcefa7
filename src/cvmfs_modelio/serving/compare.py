"""How long until KServe answers its first inference, per way of getting the model to it.

Three paths, each measured from the start of the first process to the first successful
v2 REST inference (``POST /v2/models/NAME/infer`` answered 200 with outputs):

- **download** (KServe's storage initializer): ``kserve_storage.Storage.download`` fetches
  every file of the model over HTTP (``http://`` storage URI) from the emulated stratum's
  HTTP server (the builtin server, serving the files as they are) behind the WAN emulator
  into an empty local directory (the pod's ``emptyDir``); when it has exited, KServe's
  ``ModelServer`` starts and loads the local copy.  The clock runs from the initializer's
  start, as a pod's does from its init container;
- **cvmfs** (a cvmfs-csi volume, ``pvc://`` storage URI): the model is published into an
  emulated CVMFS store and mounted with the emulated client (``cmio-simfs``, the real
  client's per-object cost profile) behind the same WAN emulator; the ModelServer reads it
  in place, fetching only the chunks ONNX Runtime reads;
- **local**: the ModelServer loads a copy on local disk: the floor.

Cache states: **cold** is the CVMFS benchmark's (cvmfs: client cache wiped and page cache
dropped; local: page cache dropped); **hot** nothing cleared (the files read once before,
so that client cache and page cache hold them).  The storage initializer downloads again
for every new pod (an ``emptyDir`` lives as long as its pod), so for **download** cold and
hot both download: hot is a second pod on a node that already served the model, and the
numbers say what CVMFS's node-wide cache saves.  The origin's files are always read once
before a download (a remote server answers from memory).

Every run is checked: a cold CVMFS run must fetch objects, a hot one none (else it is
marked ``hot!``); a cold local run must start with no page resident (else
MeasurementError); every answer must be bit-identical to the first (same file, same
inputs, same ONNX Runtime); the server must listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cvmfs_modelio.core.errors import MeasurementError, UsageError
from cvmfs_modelio.serving import v2
from cvmfs_modelio.serving.children import Clean, ServerStart, run_storage_initializer, start_server
from cvmfs_modelio.serving.params import (
    POLL_S,
    CompareParams,
    MiB,
    kserve_missing,
    kserve_versions,
)

# ------------------------------------------------------------------ results


@dataclass
class Run:
    """One measured start of the model server.  Times in ns (CLOCK_MONOTONIC), bytes.

    ``total_ns``: first process start to the first successful inference; ``download_ns``
    the storage initializer's whole process (download only), of which ``transfer_ns`` is
    ``Storage.download()`` itself (the rest: Python importing kserve_storage);
    ``server_ns`` the model server's process start to the first answer, of which
    ``import_ns`` is Python importing KServe and ONNX Runtime, ``session_ns``
    ``InferenceSession`` (``model.load()``) and ``first_inference_ns`` the successful
    request's round trip.
    """

    path: str
    rtt_ms: float | None
    bandwidth_bytes_per_s: int | None
    state: str
    rep: int
    total_ns: int
    download_ns: int | None
    transfer_ns: int | None  # download: Storage.download() alone (no imports, no exit)
    server_ns: int
    import_ns: int
    session_ns: int
    first_inference_ns: int
    wire_bytes: int  # on the HTTP connection(s): the download, or the client's fetches
    objects_fetched: int | None  # cvmfs: the client's downloads (fetch.n_downloads)
    listen: list[str]  # address:port the server listened on
    outputs_sha256: str
    polls: int  # failed attempts before the first answer (refused or not ready)
    flags: list[str] = field(default_factory=list)  # what makes this run not clean


@dataclass
class Row:
    """Medians over the repetitions of one (path, network, state)."""

    path: str
    rtt_ms: float | None
    bandwidth_bytes_per_s: int | None
    state: str
    reps: int
    total_ns: int
    download_ns: int | None
    transfer_ns: int | None
    server_ns: int
    import_ns: int
    session_ns: int
    first_inference_ns: int
    wire_bytes: int
    objects_fetched: int | None
    ratio_to_local: float | None  # total / local's total in the same state
    flags: list[str]


@dataclass
class CompareResult:
    model: str
    model_bytes: int
    files: list[dict[str, Any]]
    params: dict[str, Any]
    rows: list[Row]
    runs: list[Run]
    versions: dict[str, str | None]
    answer: dict[str, Any]
    load_average: dict[str, list[float]]
    notes: list[str]

    def to_payload(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_bytes": self.model_bytes,
            "files": self.files,
            "params": self.params,
            "versions": self.versions,
            "answer": self.answer,
            "answer_sha256": self.runs[0].outputs_sha256 if self.runs else None,
            "load_average": self.load_average,
            "rows": [asdict(r) for r in self.rows],
            "runs": [asdict(r) for r in self.runs],
            "notes": self.notes,
        }


def _median(values: Sequence[int]) -> int:
    return round(statistics.median(values))


def summarize(runs: Sequence[Run]) -> list[Row]:
    """One row per (path, network, state), in the order the runs were first made, the
    local ones (every network's local starts together) last."""
    keys: list[tuple[str, float | None, int | None, str]] = []
    for r in runs:
        k = (r.path, r.rtt_ms, r.bandwidth_bytes_per_s, r.state)
        if k not in keys:
            keys.append(k)
    keys = [k for k in keys if k[0] != "local"] + [k for k in keys if k[0] == "local"]
    local = {r.state: r for r in _rows(runs, [k for k in keys if k[0] == "local"], {}) if r.reps}
    return _rows(runs, keys, {s: r.total_ns for s, r in local.items()})


def _rows(
    runs: Sequence[Run],
    keys: Sequence[tuple[str, float | None, int | None, str]],
    local: dict[str, int],
) -> list[Row]:
    out = []
    for path, rtt, bw, state in keys:
        rs = [
            r
            for r in runs
            if (r.path, r.rtt_ms, r.bandwidth_bytes_per_s, r.state) == (path, rtt, bw, state)
        ]
        total = _median([r.total_ns for r in rs])
        dl = [r.download_ns for r in rs if r.download_ns is not None]
        tr = [r.transfer_ns for r in rs if r.transfer_ns is not None]
        objs = [r.objects_fetched for r in rs if r.objects_fetched is not None]
        flags = sorted({f for r in rs for f in r.flags})
        out.append(
            Row(
                path=path,
                rtt_ms=rtt,
                bandwidth_bytes_per_s=bw,
                state=state,
                reps=len(rs),
                total_ns=total,
                download_ns=_median(dl) if dl else None,
                transfer_ns=_median(tr) if tr else None,
                server_ns=_median([r.server_ns for r in rs]),
                import_ns=_median([r.import_ns for r in rs]),
                session_ns=_median([r.session_ns for r in rs]),
                first_inference_ns=_median([r.first_inference_ns for r in rs]),
                wire_bytes=_median([r.wire_bytes for r in rs]),
                objects_fetched=_median(objs) if objs else None,
                ratio_to_local=total / local[state] if state in local else None,
                flags=flags,
            )
        )
    return out


# ------------------------------------------------------------------ the measurement


def _outputs_digest(outputs: dict[str, npt.NDArray[Any]]) -> str:
    h = hashlib.sha256()
    for name in sorted(outputs):
        a = np.ascontiguousarray(outputs[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# Outputs up to this many elements in all are kept in the result, values included.
ANSWER_MAX_ELEMENTS = 1024


def answer_outputs(outputs: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """The outputs of an answer for JSON: shape, v2 datatype, and the values when small."""
    keep = sum(a.size for a in outputs.values()) <= ANSWER_MAX_ELEMENTS
    return {
        name: {
            "shape": list(a.shape),
            "datatype": v2.DATATYPES[a.dtype.name],
            "data": a.ravel().tolist() if keep else None,
        }
        for name, a in outputs.items()
    }


def _read_all(files: Sequence[Path]) -> None:
    """Read every byte of ``files`` (fills client cache and page cache: the hot state)."""
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(8 * MiB):
                pass


def _copy_local(files: Sequence[Path], base: Path, dest: Path) -> list[Path]:
    out = []
    for f in files:
        target = dest / os.path.relpath(f, base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        out.append(target)
    return out


Progress = Callable[[str], None]


@dataclass
class _Ctx:
    """What every run of one comparison shares."""

    name: str  # the model's name in the server (and the repository directory)
    user_name: str  # the model as the user named it
    onnx_rel: str  # the .onnx relative to the model's directory
    files_rel: list[str]
    body: bytes
    params: CompareParams
    work: Path
    clean: Clean
    runs: list[Run]
    reference: dict[str, Any] = field(default_factory=dict)  # {"digest", "path", "state"}
    answer: dict[str, Any] = field(default_factory=dict)  # the first answer's outputs


def _record(
    ctx: _Ctx,
    path: str,
    net: tuple[float, int] | None,
    state: str,
    rep: int,
    srv: ServerStart,
    *,
    t0: int,
    download_ns: int | None,
    transfer_ns: int | None = None,
    wire: int,
    objects: int | None,
    flags: list[str],
) -> Run:
    digest = _outputs_digest(srv.outputs)
    ref = ctx.reference
    if not ref:
        ref.update(digest=digest, path=path, state=state)
        ctx.answer.update(answer_outputs(srv.outputs))
    elif digest != ref["digest"]:
        raise MeasurementError(
            f"{ctx.user_name}: the {path} {state} answer differs from the {ref['path']} "
            f"{ref['state']} one (same file, same inputs): not the same model was served"
        )
    run = Run(
        path=path,
        rtt_ms=None if net is None else net[0],
        bandwidth_bytes_per_s=None if net is None else net[1],
        state=state,
        rep=rep,
        total_ns=srv.answered_ns - t0,
        download_ns=download_ns,
        transfer_ns=transfer_ns,
        server_ns=srv.answered_ns - srv.started_ns,
        import_ns=srv.import_ns,
        session_ns=srv.session_ns,
        first_inference_ns=srv.first_inference_ns,
        wire_bytes=wire,
        objects_fetched=objects,
        listen=[f"{s.address}:{s.port}" for s in srv.listen],
        outputs_sha256=digest,
        polls=srv.polls,
        flags=flags,
    )
    ctx.runs.append(run)
    return run


def _serve(ctx: _Ctx, model_file: Path) -> ServerStart:
    return start_server(
        model_file,
        ctx.name,
        ctx.work,
        ctx.body,
        threads=ctx.params.threads,
        timeout_s=ctx.params.timeout_s,
        clean=ctx.clean,
        user_name=ctx.user_name,
    )


def _run_download(
    ctx: _Ctx,
    origin: Any,
    base_url: str,
    origin_files: list[Path],
    net: tuple[float, int],
    state: str,
    rep: int,
) -> Run:
    dest = ctx.work / "emptydir"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    _read_all(origin_files)  # the remote server answers from memory
    before = _sent_bytes(origin)
    uris = [f"{base_url}/{ctx.name}/{rel}" for rel in ctx.files_rel]
    t0, t1, doc = run_storage_initializer(
        dest, uris, ctx.params.timeout_s, ctx.clean, ctx.user_name
    )
    got = {str(k): int(v) for k, v in doc["files_bytes"].items()}
    want = {
        os.path.basename(r): f.stat().st_size
        for r, f in zip(ctx.files_rel, origin_files, strict=True)
    }
    if got != want:
        raise MeasurementError(
            f"{ctx.user_name}: the storage initializer wrote {got}, expected {want}"
        )
    srv = _serve(ctx, dest / os.path.basename(ctx.onnx_rel))
    wire = _sent_bytes(origin) - before
    shutil.rmtree(dest, ignore_errors=True)
    return _record(
        ctx,
        "download",
        net,
        state,
        rep,
        srv,
        t0=t0,
        download_ns=t1 - t0,
        transfer_ns=int(doc["downloaded_ns"]) - int(doc["imported_ns"]),
        wire=wire,
        objects=None,
        flags=[],
    )


def _sent_bytes(origin: Any) -> int:
    # Body bytes of every answer the origin logged (it logs once the last byte is sent).
    return int(origin.log.snapshot().events["length"].sum())


def _run_cvmfs(
    ctx: _Ctx, mnt: Any, files: list[Path], net: tuple[float, int], state: str, rep: int
) -> Run:
    if state == "cold":
        mnt.clear_caches(files)
    else:
        _read_all(files)
    before = mnt.counters()
    srv = _serve(ctx, files[0])
    after = mnt.counters()
    objects = after["fetch.n_downloads"] - before["fetch.n_downloads"]
    wire = after["download.sz_transferred_bytes"] - before["download.sz_transferred_bytes"]
    flags = []
    if state == "cold" and objects == 0:
        raise MeasurementError(
            f"{ctx.user_name}: a cold CVMFS start fetched nothing: the client cache was not empty"
        )
    if state == "hot" and objects:
        flags.append(f"hot!: fetched {objects} objects")
    return _record(
        ctx,
        "cvmfs",
        net,
        state,
        rep,
        srv,
        t0=srv.started_ns,
        download_ns=None,
        wire=wire,
        objects=objects,
        flags=flags,
    )


def _run_local(ctx: _Ctx, files: list[Path], state: str, rep: int) -> Run:
    from cvmfs_modelio.mounts import drop_page_cache

    if state == "cold":
        drop_page_cache(files)  # MeasurementError if a page stays resident
    else:
        _read_all(files)
    srv = _serve(ctx, files[0])
    return _record(
        ctx,
        "local",
        None,
        state,
        rep,
        srv,
        t0=srv.started_ns,
        download_ns=None,
        wire=0,
        objects=None,
        flags=[],
    )


def _model_name(stem: str) -> str:
    # KServe model names go into URL paths: keep them to [a-z0-9-].
    out = "".join(c if c.isalnum() else "-" for c in stem.lower()).strip("-")
    return out or "model"


@contextlib.contextmanager
def _origin_server(root: Path, net: tuple[float, int]) -> Iterator[tuple[Any, str]]:
    """The plain-file HTTP server, behind the WAN emulator when ``net`` asks for one."""
    from cvmfs_modelio.sim.builtin_http import BuiltinServer
    from cvmfs_modelio.sim.mount import NetemChild

    srv = BuiltinServer(root).start()
    try:
        rtt, bw = net
        if rtt or bw:
            wan = NetemChild("127.0.0.1", srv.port, rtt, bw)
            try:
                yield srv, f"http://127.0.0.1:{wan.port}"
            finally:
                wan.stop()
        else:
            yield srv, srv.url
    finally:
        srv.stop()


def run_compare(
    model: str | os.PathLike[str],
    params: CompareParams | None = None,
    progress: Progress | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    runs_out: list[Run] | None = None,
) -> CompareResult:
    """Measure every (path, network, state) ``params.reps`` times; the rows and every run.

    Everything (copies, store, client cache, mount, downloads) lives in a temporary
    directory (under ``work_dir``) that is removed afterwards; every mount is unmounted,
    every server and child stopped, also on error or interrupt.  ``runs_out`` (if given)
    receives each run as it is measured, so an interrupted caller keeps what was done.
    """
    from cvmfs_modelio.campaign.experiments import ModelFiles as CampaignModel
    from cvmfs_modelio.campaign.experiments import (
        fuse_unavailable_reason,
        model_from_path,
        stage_sources,
    )

    params = params or CompareParams()
    params.validate()
    user_name = os.fspath(model)
    missing = kserve_missing()
    if missing is not None:
        raise UsageError(f"kserve-compare: {missing}")
    mf = model_from_path(model)
    if mf.onnx.suffix != ".onnx":
        raise UsageError(f"{user_name}: not an .onnx model (KServe's ONNX predictor needs one)")
    if "cvmfs" in params.paths:
        reason = fuse_unavailable_reason()
        if reason is not None:
            raise UsageError(f"--paths cvmfs: the emulated CVMFS client cannot mount: {reason}")
    feeds = v2.model_inputs(mf.onnx)
    body = v2.request_body(feeds)
    name = _model_name(mf.onnx.stem)
    base = mf.onnx.parent
    files_rel = [os.path.relpath(f, base) for f in mf.files]
    if "download" in params.paths:
        for rel in files_rel:
            # kserve_storage writes an http:// file as OUT_DIR/<last URL segment>, unquoted
            if os.sep in rel or not re.fullmatch(r"[A-Za-z0-9._+-]+", rel):
                raise UsageError(
                    f"{user_name}: --paths download: {rel} cannot come through KServe's http "
                    "storage as it is (one flat directory, plain file names)"
                )
    runs: list[Run] = [] if runs_out is None else runs_out
    say = progress or (lambda _m: None)
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-kserve-", dir=work_dir) as tmp:
        work = Path(tmp)
        display = {str(work / "emptydir"): os.path.dirname(user_name) or "."}
        for sub in ("origin", "local", "mnt"):
            display[str(work / sub / name)] = os.path.dirname(user_name) or "."
        for rel in files_rel:
            for d in ("origin", "local", "mnt"):
                display[str(work / d / name / rel)] = os.path.join(os.path.dirname(user_name), rel)
            display[str(work / "emptydir" / os.path.basename(rel))] = os.path.join(
                os.path.dirname(user_name), rel
            )
        ctx = _Ctx(
            name, user_name, files_rel[0], files_rel, body, params, work, Clean(display), runs
        )
        stage_sources([CampaignModel(name, mf.onnx, mf.files)], work / "origin")
        origin_files = [work / "origin" / name / r for r in files_rel]
        local_files = _copy_local(mf.files, base, work / "local" / name)
        store = work / "store"
        if "cvmfs" in params.paths:
            from cvmfs_modelio.sim.publish import publish

            say("publishing into the emulated CVMFS store")
            publish(work / "origin", store)
        # Local starts are interleaved with the others, in every network's loop: on a
        # shared machine the load drifts, and the floor must see the same load.
        nets = params.networks()
        if "download" not in params.paths and "cvmfs" not in params.paths:
            nets = nets[:1]
        local = local_files if "local" in params.paths else None
        for i, net in enumerate(nets):
            _measure_network(ctx, net, store, origin_files, local, i, say)
    notes = []
    if "download" in params.paths:
        notes.append(
            "download: KServe's storage initializer runs in every new pod (emptyDir), so hot "
            "downloads again; its origin answers from memory"
        )
    if "cvmfs" in params.paths:
        notes.append(
            f"cvmfs: emulated client, profile {params.client_profile}, CVMFS default chunking"
        )
    notes.append(
        f"times are late by up to {POLL_S * 1000:g} ms (the parent polls for the first answer)"
    )
    return CompareResult(
        model=user_name,
        model_bytes=sum(f.stat().st_size for f in mf.files),
        files=[
            {"path": os.path.join(os.path.dirname(user_name), r), "size_bytes": f.stat().st_size}
            for r, f in zip(files_rel, mf.files, strict=True)
        ],
        params={
            "rtts_ms": list(params.rtts_ms),
            "bandwidths_bytes_per_s": list(params.bandwidths),
            "states": list(params.states),
            "paths": list(params.paths),
            "reps": params.reps,
            "threads": params.threads,
            "client_profile": params.client_profile,
            "poll_interval_s": POLL_S,
            "inputs": {
                k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in feeds.items()
            },
        },
        rows=summarize(runs),
        runs=runs,
        versions=kserve_versions(),
        answer=ctx.answer,
        load_average={"before": load_before, "after": list(os.getloadavg())},
        notes=notes,
    )


def _measure_network(
    ctx: _Ctx,
    net: tuple[float, int],
    store: Path,
    origin_files: list[Path],
    local_files: list[Path] | None,
    net_index: int,
    say: Progress,
) -> None:
    from cvmfs_modelio.core import units

    params = ctx.params
    label = f"RTT {net[0]:g} ms, {units.fmt_rate(net[1]) if net[1] else 'unlimited'}"
    with contextlib.ExitStack() as stack:
        mnt = None
        files: list[Path] = []
        if "cvmfs" in params.paths:
            from cvmfs_modelio.mounts import open_mount
            from cvmfs_modelio.sim.mount import MountOptions, SimMount
            from cvmfs_modelio.sim.server import serve

            srv = stack.enter_context(serve(store))
            mp = ctx.work / "mnt"
            mp.mkdir(exist_ok=True)
            opts = MountOptions(
                cache=ctx.work / "cache",
                rtt_ms=net[0],
                bandwidth=net[1],
                client_profile=params.client_profile,
            )
            sm = stack.enter_context(SimMount(srv.url, mp, opts))
            mnt = open_mount(sm.path)
            files = [mnt.locate(f"/{ctx.name}/{r}") for r in ctx.files_rel]
        origin = base_url = None
        if "download" in params.paths:
            origin, base_url = stack.enter_context(_origin_server(ctx.work / "origin", net))
        for rep in range(params.reps):
            for state in params.states:
                if origin is not None and base_url is not None:
                    say(f"download [{label}] {state} {rep + 1}/{params.reps}")
                    _run_download(ctx, origin, base_url, origin_files, net, state, rep)
                if mnt is not None:
                    say(f"cvmfs [{label}] {state} {rep + 1}/{params.reps}")
                    _run_cvmfs(ctx, mnt, files, net, state, rep)
                if local_files is not None:
                    say(f"local {state} {rep + 1}/{params.reps}")
                    _run_local(ctx, local_files, state, net_index * params.reps + rep)


# ------------------------------------------------------------------ table


HEADER = [
    "path",
    "RTT",
    "bandwidth",
    "state",
    "1st inference",
    "x local",
    "download",
    "transfer",
    "imports",
    "session",
    "on the wire",
    "objects",
]


def format_rows(rows: Sequence[Row]) -> str:
    """The comparison table (medians over the repetitions)."""
    from cvmfs_modelio.core import units
    from cvmfs_modelio.core.tables import format_table

    body = []
    flagged = []
    for r in rows:
        state = r.state + ("!" if r.flags else "")
        flagged += [f"{r.path} {r.state}: {f}" for f in r.flags]
        body.append(
            [
                r.path,
                "-" if r.rtt_ms is None else f"{r.rtt_ms:g} ms",
                "-"
                if r.bandwidth_bytes_per_s is None
                else (
                    units.fmt_rate(r.bandwidth_bytes_per_s)
                    if r.bandwidth_bytes_per_s
                    else "unlimited"
                ),
                state,
                units.fmt_ns(r.total_ns),
                "-" if r.ratio_to_local is None else f"{r.ratio_to_local:.2f}x",
                "-" if r.download_ns is None else units.fmt_ns(r.download_ns),
                "-" if r.transfer_ns is None else units.fmt_ns(r.transfer_ns),
                units.fmt_ns(r.import_ns),
                units.fmt_ns(r.session_ns),
                units.fmt_bytes(r.wire_bytes),
                "-" if r.objects_fetched is None else str(r.objects_fetched),
            ]
        )
    text = format_table(HEADER, body)
    return "\n".join([text, *flagged])
