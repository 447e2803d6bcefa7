"""INTERIM: real measurements into a results store, until the campaign runner (issue 10a) lands.

The statistics and report layer (``cvmfs_modelio.stats``, ``cvmfs_modelio.report``) reads a
results store laid out as the contract between the runner and the statistics side says
(``docs/stats.md``; tables ``measurements``, ``fetches``, ``accesses``).  This module makes
such a store from real loads with the existing machinery, so that fits, recommendations,
validation and reports rest on measurements before ``cvmfs-modelio run`` exists.  Delete it
(and point :mod:`cvmfs_modelio.stats.validate` at the runner) when the runner's store lands.

What one :class:`MountCell` does: the models (staged as ``src/<model>/``) are published with
the cell's chunking, served by the builtin stratum and mounted with ``cmio-simfs`` behind the
user-space WAN emulator (RTT, bandwidth) with ``--prefetch N`` and ``--log``.  Per repetition
and model: a **cold** load (client cache emptied, page cache invalidated by the client) and a
**warm** one (page cache of the model's files dropped, client cache kept), each ONNX Runtime
session creation and first inference in a fresh process.  At unmount the client writes its
event log; every FETCH, FUSE open and FUSE read falls inside exactly one load's time window
(loads are sequential, one clock: CLOCK_MONOTONIC), which gives the per-fetch rows and the
access pattern of that load.  With ``trace`` one extra cold load per model runs under the
LD_PRELOAD tracer (rows marked ``traced``; never used as timing).

Besides the contract's tables it writes ``reads`` (an extension, see ``docs/stats.md``): every
request of every vantage point (FUSE opens and reads, fetches, traced syscalls and page-ins)
with file, offset, length, time and lane, which the access-pattern model and the heat maps use.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.experiments import (
    ChunkConfig,
    ModelFiles,
    fuse_unavailable_reason,
    stage_sources,
)
from cvmfs_modelio.core.errors import UsageError

CHILD_TIMEOUT_S = 900.0
STORE_SCHEMA = {"name": "cvmfs-modelio.results-store", "version": 1}
# The emulated client of this tree has no timing calibration yet (issue 13 adds
# ``--client-profile cvmfs-2.12``): today's behaviour is the "fast" profile.
CLIENT_PROFILE = "fast"

_CHILD = (
    "import json, sys, time\n"
    "import onnxruntime\n"
    "from cvmfs_modelio.ort.child import load_and_run\n"
    "t = time.monotonic_ns()\n"
    "r = load_and_run(sys.argv[1])\n"
    "r['t_start_mono_ns'] = t\n"
    "print(json.dumps(r))\n"
)


@dataclass(frozen=True)
class ModelSpec:
    """A model to measure: its files, family (``hep-tagger``, ``mlp``, ...) and format."""

    files: ModelFiles
    family: str
    fmt: str = "onnx"


@dataclass(frozen=True)
class MountCell:
    """One mount: chunking, network (``rtt_ms``; ``bandwidth`` bytes/s, 0 unlimited), client."""

    config: ChunkConfig
    rtt_ms: float
    bandwidth: int
    prefetch: int = 0
    parallel: int = 16
    trace: bool = False  # one extra cold load per model under the LD_PRELOAD tracer


@dataclass
class Plan:
    """What to measure: every model in every mount cell, ``reps`` cold+warm pairs each."""

    campaign: str
    models: list[ModelSpec]
    cells: list[MountCell]
    reps: int = 3
    trace: bool = False
    warm: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[str], None]


def cell_key(params: dict[str, Any]) -> str:
    """Stable sha1 of a cell's canonical JSON parameters (``rep`` excluded)."""
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _object_hex(obj_path: str) -> tuple[str, str]:
    """(hex name, kind) of ``data/ab/cdef...[P|C]``."""
    parts = obj_path.split("/")
    name = parts[-2] + parts[-1]
    if name.endswith("P"):
        return name[:-1], "chunk"
    if name.endswith("C"):
        return name[:-1], "catalog"
    return name, "whole"


def _run_child(onnx: Path, env: dict[str, str] | None) -> tuple[dict[str, Any], int, int, str]:
    t_a = time.monotonic_ns()
    try:
        r = subprocess.run(
            [sys.executable, "-c", _CHILD, str(onnx)],
            capture_output=True,
            text=True,
            env=env,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {}, t_a, time.monotonic_ns(), f"timed out after {CHILD_TIMEOUT_S:.0f} s"
    t_b = time.monotonic_ns()
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        return {}, t_a, t_b, lines[-1] if lines else f"exit status {r.returncode}"
    doc: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return doc, t_a, t_b, ""


def _write_part(store: Path, table: str, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` as one new Parquet part (temp name + rename); nothing if empty."""
    if not rows:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = store / table
    d.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    final = d / f"part-{stamp}-{uuid.uuid4().hex}.parquet"
    tmp = d / f".{final.name}.tmp"
    try:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def init_store(store: Path, plan: Plan) -> None:
    """Create ``store`` (or reuse one of the same schema)."""
    meta = store / "store.json"
    if meta.exists():
        doc = json.loads(meta.read_text())
        if doc.get("schema") != STORE_SCHEMA:
            raise UsageError(f"{meta}: not a results store of schema {STORE_SCHEMA}")
        return
    store.mkdir(parents=True, exist_ok=True)
    campaign = {
        "name": plan.campaign,
        "models": [
            {"name": m.files.name, "path": str(m.files.onnx), "family": m.family}
            for m in plan.models
        ],
        "cells": [
            {**asdict(c.config), "rtt_ms": c.rtt_ms, "bandwidth_bytes_per_s": c.bandwidth}
            | {"prefetch_depth": c.prefetch, "parallel_handles": c.parallel}
            for c in plan.cells
        ],
        "reps": plan.reps,
        "runner": "cvmfs_modelio.campaign.interim_store (interim, until issue 10a's runner)",
        **plan.extra,
    }
    doc = {
        "schema": STORE_SCHEMA,
        "campaign": campaign,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.write_text(json.dumps(doc, indent=1) + "\n")


def measure(plan: Plan, store: str | os.PathLike[str], progress: Progress | None = None) -> int:
    """Measure ``plan`` into the results store ``store``; returns measurements written.

    Each mount cell's rows are appended as one part per table when the cell is done, so an
    interrupted run keeps every finished cell.
    """
    reason = fuse_unavailable_reason()
    if reason is not None:
        raise UsageError(f"cannot mount the emulated CVMFS: {reason}")
    dest = Path(store)
    init_store(dest, plan)
    say = progress or (lambda _m: None)
    n = 0
    with tempfile.TemporaryDirectory(prefix="cvmfs-modelio-interim-") as tmp:
        work = Path(tmp)
        src = work / "src"
        repo_onnx = stage_sources([m.files for m in plan.models], src)
        published: dict[str, Path] = {}
        for ci, cell in enumerate(plan.cells):
            say(
                f"cell {ci + 1}/{len(plan.cells)}: {cell.config.label}, RTT {cell.rtt_ms:g} ms, "
                f"bw {cell.bandwidth}, prefetch {cell.prefetch}"
            )
            store_dir = published.get(cell.config.label)
            if store_dir is None:
                store_dir = _publish(src, work / f"store{len(published)}", cell.config)
                published[cell.config.label] = store_dir
            tables = _measure_cell(plan, cell, store_dir, repo_onnx, work, say)
            for name, rows in tables.items():
                _write_part(dest, name, rows)
            n += len(tables["measurements"])
    return n


def _publish(src: Path, store: Path, config: ChunkConfig) -> Path:
    from cvmfs_modelio.sim.publish import PublishParams, publish

    pp = (
        PublishParams(config.min_size, config.avg_size, config.max_size)
        if config.chunking
        else PublishParams(chunking=False)
    )
    publish(src, store, pp)
    return store


def _measure_cell(
    plan: Plan,
    cell: MountCell,
    store: Path,
    repo_onnx: dict[str, str],
    work: Path,
    say: Progress,
) -> dict[str, list[dict[str, Any]]]:
    from cvmfs_modelio.core.environment import environment
    from cvmfs_modelio.core.events import read_event_file
    from cvmfs_modelio.mounts import open_mount
    from cvmfs_modelio.sim.mount import MountOptions, SimMount
    from cvmfs_modelio.sim.server import serve

    mp = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    log = work / f"simfs-{uuid.uuid4().hex}.evt"
    opts = MountOptions(
        cache=cache,
        rtt_ms=cell.rtt_ms,
        bandwidth=cell.bandwidth,
        prefetch=cell.prefetch,
        parallel=cell.parallel,
        log=log,
    )
    loads: list[dict[str, Any]] = []
    layouts: dict[str, dict[str, Any]] = {}
    with serve(store) as srv, SimMount(srv.url, mp, opts) as sm:
        mnt = open_mount(sm.path)
        env_json = json.dumps(environment([sm.path]), sort_keys=True)
        for spec in plan.models:
            m = spec.files
            onnx = mnt.locate(repo_onnx[m.name])
            files = {
                os.path.relpath(f, m.onnx.parent): onnx.parent / os.path.relpath(f, m.onnx.parent)
                for f in m.files
            }
            layouts[m.name] = {rel: mnt.layout(p) for rel, p in files.items()}
        for rep in range(plan.reps):
            for spec in plan.models:
                m = spec.files
                onnx = mnt.locate(repo_onnx[m.name])
                paths = list((onnx.parent / os.path.relpath(f, m.onnx.parent)) for f in m.files)
                states = ["cold", "warm"] if plan.warm else ["cold"]
                if (plan.trace or cell.trace) and rep == 0:
                    states.append("cold-traced")
                for state in states:
                    say(f"  {m.name} rep {rep + 1}/{plan.reps} {state}")
                    tdir: Path | None = None
                    env = None
                    if state.startswith("cold"):
                        mnt.clear_caches(paths)
                        verified = not any(_cached(cache, lay) for lay in layouts[m.name].values())
                    else:
                        mnt.drop_page_cache(paths)
                        verified = False
                    if state == "cold-traced":
                        from cvmfs_modelio.trace.tracer import traced_env

                        tdir = Path(tempfile.mkdtemp(prefix="trace-", dir=work))
                        env = traced_env(tdir, [str(sm.path)])
                    before = mnt.counters()
                    doc, t_a, t_b, err = _run_child(onnx, env)
                    after = mnt.counters()
                    loads.append(
                        {
                            "spec": spec,
                            "rep": rep,
                            "state": state,
                            "doc": doc,
                            "t_a": t_a,
                            "t_b": t_b,
                            "error": err,
                            "verified": verified,
                            "objects": after["fetch.n_downloads"] - before["fetch.n_downloads"],
                            "bytes": after["download.sz_transferred_bytes"]
                            - before["download.sz_transferred_bytes"],
                            "fuse_reads": after["cvmfs.n_fs_read"] - before["cvmfs.n_fs_read"],
                            "trace_dir": tdir,
                            "mount": str(sm.path),
                        }
                    )
    evlog = read_event_file(log)
    return _tables(plan, cell, loads, layouts, evlog, env_json)


def _cached(cache: Path, layout: Any) -> bool:
    for h in layout.hashes or ():
        d = cache / h[:2]
        if d.is_dir() and any(p.name.startswith(h[2:]) for p in d.iterdir()):
            return True
    return False


def _tables(
    plan: Plan,
    cell: MountCell,
    loads: list[dict[str, Any]],
    layouts: dict[str, dict[str, Any]],
    evlog: Any,
    env_json: str,
) -> dict[str, list[dict[str, Any]]]:
    import numpy as np

    from cvmfs_modelio.core.events import Op, Source

    ev = evlog.events
    t = ev["t_start_ns"]
    host = socket.gethostname()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meas: list[dict[str, Any]] = []
    fetches: list[dict[str, Any]] = []
    accesses: list[dict[str, Any]] = []
    reads: list[dict[str, Any]] = []
    cfg = cell.config
    for ld in loads:
        spec: ModelSpec = ld["spec"]
        m = spec.files
        lays = layouts[m.name]
        # repository path of each file -> relative name inside the model directory
        repo_files = {f"/{m.name}/{rel}": rel for rel in lays}
        obj_index = {
            h: (rel, i, int(lay.offsets[i]), int(lay.sizes[i]))
            for rel, lay in lays.items()
            for i, h in enumerate(lay.hashes or ())
        }
        state = ld["state"]
        cache_state = "cold" if state.startswith("cold") else "warm"
        params = {
            "model": m.name,
            "target": "emulated",
            "chunking": cfg.chunking,
            "chunk_min_bytes": cfg.min_size,
            "chunk_avg_bytes": cfg.avg_size,
            "chunk_max_bytes": cfg.max_size,
            "rtt_ns": round(cell.rtt_ms * 1e6),
            "bandwidth_bytes_per_s": cell.bandwidth,
            "client_profile": CLIENT_PROFILE,
            "prefetch_depth": cell.prefetch,
            "parallel_handles": cell.parallel,
            "cache_state": cache_state,
            "loader": "ort",
            "executor": "local",
            "traced": state == "cold-traced",
        }
        mid = str(uuid.uuid4())
        doc = ld["doc"]
        t0 = int(doc.get("t_start_mono_ns", ld["t_a"]))
        win = (t >= ld["t_a"]) & (t < ld["t_b"])
        w = ev[win]
        fetch_ev = w[(w["source"] == int(Source.FETCH)) & (w["op"] == int(Op.FETCH))]
        order = np.argsort(fetch_ev["t_start_ns"], kind="stable")
        for seq, e in enumerate(fetch_ev[order]):
            obj_path = evlog.files[int(e["file_id"])].path
            hexname, kind = _object_hex(obj_path)
            rel, idx, off, size = obj_index.get(hexname, ("", -1, int(e["offset"]), -1))
            fetches.append(
                {
                    "measurement_id": mid,
                    "seq": seq,
                    "object": hexname,
                    "kind": kind,
                    "compressed_bytes": int(e["length"]),
                    "bytes": int(e["result"]),
                    "start_ns": int(e["t_start_ns"]) - t0,
                    "duration_ns": int(e["duration_ns"]),
                    "thread": int(e["tid"]),
                    "rtt_ns": params["rtt_ns"],
                    "bandwidth_bytes_per_s": cell.bandwidth,
                    "client_profile": CLIENT_PROFILE,
                    "file": rel,
                    "chunk_index": idx,
                    "offset_bytes": off,
                    "ok": int(e["err"]) == 0,
                }
            )
            reads.append(
                {
                    "measurement_id": mid,
                    "source": "fetch",
                    "file": rel,
                    "offset_bytes": off,
                    "length_bytes": size if size >= 0 else int(e["result"]),
                    "t_ns": int(e["t_start_ns"]) - t0,
                    "duration_ns": int(e["duration_ns"]),
                    "lane": int(e["tid"]),
                }
            )
        fuse = w[(w["source"] == int(Source.FUSE)) & (w["err"] == 0)]
        fuse = fuse[np.argsort(fuse["t_start_ns"], kind="stable")]
        touched: dict[tuple[str, int], dict[str, Any]] = {}
        requested = 0
        for e in fuse:
            op = int(e["op"])
            if op not in (int(Op.FUSE_READ), int(Op.FUSE_OPEN)):
                continue
            path = evlog.files[int(e["file_id"])].path if int(e["file_id"]) >= 0 else ""
            found = repo_files.get(path)
            if found is None:
                continue
            rel = found
            is_read = op == int(Op.FUSE_READ)
            off = int(e["offset"]) if is_read else 0
            length = int(e["result"]) if is_read else 0
            reads.append(
                {
                    "measurement_id": mid,
                    "source": "fuse-read" if is_read else "fuse-open",
                    "file": rel,
                    "offset_bytes": off,
                    "length_bytes": length,
                    "t_ns": int(e["t_start_ns"]) - t0,
                    "duration_ns": int(e["duration_ns"]),
                    "lane": int(e["pid"]),
                }
            )
            lay = lays[rel]
            if not is_read:
                if lay.chunked:
                    continue
                idxs = [0]
            else:
                if length <= 0:
                    continue
                requested += length
                lo = int(lay.chunk_of(off))
                hi = int(lay.chunk_of(off + length - 1))
                idxs = list(range(lo, hi + 1))
            for i in idxs:
                key = (rel, i)
                if key not in touched:
                    touched[key] = {
                        "measurement_id": mid,
                        "file": rel,
                        "chunk_index": i,
                        "chunk_offset_bytes": int(lay.offsets[i]),
                        "chunk_bytes": int(lay.sizes[i]),
                        "order": len(touched),
                        "first_touch_ns": int(e["t_start_ns"]) - t0,
                        "lane": int(e["pid"]),
                    }
        accesses.extend(touched.values())
        if ld["trace_dir"] is not None:
            reads.extend(_trace_reads(ld["trace_dir"], ld["mount"], m.name, mid, t0))
        ok = not ld["error"]
        session = int(doc.get("session_ns", 0))
        first = int(doc.get("first_inference_ns", 0))
        meas.append(
            {
                "measurement_id": mid,
                "cell_key": cell_key(params),
                "rep": ld["rep"],
                "campaign": plan.campaign,
                "created_utc": created,
                "model_path": str(m.onnx),
                "model_family": spec.family,
                "model_format": spec.fmt,
                "model_bytes": sum(lay.file_size for lay in lays.values()),
                "chunk_label": cfg.label,
                **params,
                "ok": ok,
                "error": ld["error"],
                "session_ns": session,
                "first_inference_ns": first,
                "time_to_first_inference_ns": session + first,
                "wall_ns": ld["t_b"] - ld["t_a"],
                "objects_fetched": int(ld["objects"]),
                "bytes_fetched": int(ld["bytes"]),
                "bytes_requested": requested,
                "chunks_total": sum(lay.n_chunks for lay in lays.values()),
                "chunks_touched": len(touched),
                "fuse_reads": int(ld["fuse_reads"]),
                "cold_verified": bool(ld["verified"]) and cache_state == "cold",
                "environment_json": env_json,
                "hostname": host,
            }
        )
    return {"measurements": meas, "fetches": fetches, "accesses": accesses, "reads": reads}


def _trace_reads(
    trace_dir: Path, mount: str, model: str, mid: str, t0: int
) -> list[dict[str, Any]]:
    """Syscall reads and page-ins of a traced load, as ``reads`` rows (times from t0)."""
    from cvmfs_modelio.core.events import Op
    from cvmfs_modelio.trace.tracer import read_trace

    log = read_trace(trace_dir)
    prefix = f"{mount}/{model}/"
    syscalls = {int(o) for o in (Op.READ, Op.PREAD, Op.READV, Op.PREADV, Op.FREAD)}
    pageins = {int(o) for o in (Op.PAGE_IN, Op.PAGE_FAULT, Op.MMAP_TOUCH)}
    out: list[dict[str, Any]] = []
    for e in log.events:
        fid = int(e["file_id"])
        if fid not in log.files or int(e["err"]) != 0 or int(e["offset"]) < 0:
            continue
        path = log.files[fid].path
        if not path.startswith(prefix):
            continue
        op = int(e["op"])
        if op in syscalls:
            source = "syscall"
        elif op in pageins:
            source = "page-in"
        else:
            continue
        length = int(e["result"]) if op in syscalls else int(e["length"])
        if length <= 0:
            continue
        out.append(
            {
                "measurement_id": mid,
                "source": source,
                "file": path[len(prefix) :],
                "offset_bytes": int(e["offset"]),
                "length_bytes": length,
                "t_ns": int(e["t_start_ns"]) - t0,
                "duration_ns": int(e["duration_ns"]),
                "lane": (int(e["pid"]) << 16) ^ int(e["fd"]),
            }
        )
    return out


# ------------------------------------------------------------------ command line


def _models_from_args(paths: Sequence[str], families: Sequence[str]) -> list[ModelSpec]:
    from cvmfs_modelio.campaign.experiments import model_from_path, unique_names

    if len(families) not in (1, len(paths)):
        raise UsageError("--family: give one family or one per model")
    fams = list(families) * (len(paths) if len(families) == 1 else 1)
    files = unique_names([model_from_path(p) for p in paths])
    return [ModelSpec(f, fam) for f, fam in zip(files, fams, strict=True)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cvmfs_modelio.campaign.interim_store PLAN.json RESULTS``.

    PLAN.json: ``{"campaign": NAME, "reps": N, "trace": bool, "models": [{"path": P,
    "family": F}], "cells": [{"config": "1M/2M/4M"|"whole", "rtt_ms": X, "bandwidth": B,
    "prefetch": N}]}``.
    """
    import argparse

    from cvmfs_modelio.campaign.experiments import (
        model_from_path,
        parse_configs,
        stderr_progress,
        unique_names,
    )
    from cvmfs_modelio.core import units

    p = argparse.ArgumentParser(prog="python -m cvmfs_modelio.campaign.interim_store")
    p.add_argument("plan")
    p.add_argument("results")
    args = p.parse_args(argv)
    try:
        doc = json.loads(Path(args.plan).read_text())
        files = unique_names([model_from_path(m["path"]) for m in doc["models"]])
        models = [
            ModelSpec(f, m["family"], m.get("format", "onnx"))
            for f, m in zip(files, doc["models"], strict=True)
        ]
        cells = [
            MountCell(
                parse_configs(c["config"])[0],
                float(c["rtt_ms"]),
                units.parse_size(str(c.get("bandwidth", 0)), "bandwidth"),
                int(c.get("prefetch", 0)),
                trace=bool(c.get("trace", False)),
            )
            for c in doc["cells"]
        ]
        plan = Plan(doc["campaign"], models, cells, int(doc.get("reps", 3)), bool(doc.get("trace")))
        n = measure(plan, args.results, stderr_progress())
    except UsageError as e:
        sys.stderr.write(f"interim_store: {e}\n")
        return 2
    print(f"{n} measurements appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
