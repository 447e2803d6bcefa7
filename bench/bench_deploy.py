"""What each deployment tool buys: cold time to first inference on emulated CVMFS (issue 11).

For the MiniLM ONNX model (~87 MiB) and a ~1 GiB synthetic decoder, every layout
``cvmfs-modelio prepare`` writes: weights embedded, external packed (unaligned), external
4 KiB-aligned, external 4 KiB-aligned in the order a recorded load first touched the
tensors; each external one with and without the file bundle (``sim mount
--prefetch-filebundles``); and the 4 KiB layout after ``warm --parallel 1/4/16``.

Stack: ``sim publish`` (CVMFS default chunking 4/8/16 MiB) -> builtin stratum -> user-space
WAN emulator (RTT, 100 MiB/s) -> ``cmio-simfs`` (client profile cvmfs-2.12) -> ONNX Runtime
in a fresh child (session with default options, then one run).  Every repetition is a new
mount with an empty cache (cold: client cache empty, page cache dropped).  Per cell: the
median time to first inference over ``--reps`` loads; from the client's own event log, the
objects fetched and bytes on the wire during the load and up to the unmount (a bundle
prefetch may outlive the first inference), and the longest serial
fetch chain (the most fetches of the load that ran one after another, none overlapping:
what the RTT multiplies).  Warm cells: the warm time, then a load with the client cache
hot and the page cache dropped.  Ratios are to the embedded layout of the same model and RTT.

    python bench/bench_deploy.py [--reps 3] [--quick] [--json bench/results/deploy.json]

``--quick``: MiniLM only, RTT 25 ms, one repetition.  Needs root (FUSE).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
BANDWIDTH = 100 * MiB


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def longest_serial_chain(intervals: list[tuple[int, int]]) -> int:
    """Most intervals that follow one another without overlap (greedy by earliest end)."""
    n, last_end = 0, -1
    for s, e in sorted(intervals, key=lambda x: x[1]):
        if s >= last_end:
            n += 1
            last_end = e
    return n


def fetch_stats(log: Path, t_load0: int, t_load1: int) -> dict[str, Any]:
    """Fetches in the client's log: those that started during the load ``[t_load0,
    t_load1)`` (the measured child's phases, CLOCK_MONOTONIC like the log), and all from the
    load's start to the unmount (a bundle prefetch may outlive the first inference)."""
    from cvmfs_modelio.core.events import Op, Source, read_event_file

    ev = read_event_file(log).events
    f = ev[(ev["source"] == Source.FETCH) & (ev["op"] == Op.FETCH)]
    after = f[f["t_start_ns"] >= t_load0]
    during = after[after["t_start_ns"] < t_load1]
    return {
        "fetches_load": len(during),
        "wire_bytes_load": int(during["length"].sum()),
        "fetches_after_start": len(after),
        "wire_bytes_after_start": int(after["length"].sum()),
        "serial_chain": longest_serial_chain(
            [(int(e["t_start_ns"]), int(e["t_start_ns"] + e["duration_ns"])) for e in during]
        ),
    }


def make_layouts(model: Path, out: Path, say: Any) -> dict[str, Path]:
    """Every layout of ``model`` under ``out/<layout>/``; returns layout -> .onnx."""
    from cvmfs_modelio.deploy.prepare import PrepareOptions, prepare
    from cvmfs_modelio.ort.load import run_load

    verify = model.stat().st_size < 256 * MiB  # two 1 GiB sessions would crowd the machine
    (out / "embedded").mkdir(parents=True)
    shutil.copy(model, out / "embedded" / model.name)
    say(f"{model.name}: prepare external packed / 4 KiB")
    prepare(
        model, out / "ext-packed", PrepareOptions(external_data=True, bundle=True, verify=verify)
    )
    prepare(
        model,
        out / "ext-4k",
        PrepareOptions(external_data=True, align=4096, bundle=True, verify=verify),
    )
    say(f"{model.name}: recording a load (tracer) for the load order")
    tdir = out.parent / f"trace-{out.name}"
    run_load(out / "ext-packed" / model.name, state="hot", trace=True, trace_dir=tdir)
    prepare(
        out / "ext-packed" / model.name,
        out / "ext-order",
        PrepareOptions(align=4096, order_trace=tdir, bundle=True, verify=verify),
    )
    shutil.rmtree(tdir, ignore_errors=True)
    return {
        name: out / name / model.name for name in ("embedded", "ext-packed", "ext-4k", "ext-order")
    }


def child_load(model: Path) -> dict[str, Any]:
    """ONNX Runtime in a fresh child (``cvmfs_modelio.ort.child``): session with default
    options, then one run on zero inputs.  Nothing in this process opens the model first:
    an open of the trigger would start the bundle prefetch before the measurement."""
    r = subprocess.run(
        [sys.executable, "-m", "cvmfs_modelio.ort.child", str(model)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{model}: load failed: {r.stderr.strip()}")
    doc: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return doc


def one_load(
    url: str, tmp: Path, model_rel: str, rtt: float, bundle: bool, warm_n: int | None
) -> dict[str, Any]:
    """One measurement on a new mount with an empty cache directory: the client cache is
    empty and the page cache too (a new mount's files have no cached pages), so the load
    is cold without any clearing step; warm cells drop the page cache after warming."""
    from cvmfs_modelio.deploy.warm import warm
    from cvmfs_modelio.mounts import drop_page_cache
    from cvmfs_modelio.sim.mount import MountOptions, SimMount

    for d in ("mnt", "cache"):
        shutil.rmtree(tmp / d, ignore_errors=True)
    (tmp / "mnt").mkdir(parents=True)
    log = tmp / "log.evt"
    log.unlink(missing_ok=True)
    opts = MountOptions(
        cache=tmp / "cache",
        rtt_ms=rtt,
        bandwidth=BANDWIDTH,
        log=log,
        prefetch_filebundles=bundle,
    )
    rec: dict[str, Any] = {}
    with SimMount(url, tmp / "mnt", opts) as m:
        model = m.path / model_rel
        if warm_n is not None:
            w = warm([model.parent], parallel=warm_n)
            rec["warm_ns"] = w.wall_ns
            drop_page_cache(Path(f.path) for f in w.files)
        before = m.counters()
        t0 = time.monotonic_ns()
        doc = child_load(model)
        t1 = time.monotonic_ns()
        after = m.counters()
        rec["ttfi_ns"] = int(doc["session_ns"]) + int(doc["first_inference_ns"])
        rec["session_ns"] = int(doc["session_ns"])
        rec["downloads_load"] = after["fetch.n_downloads"] - before["fetch.n_downloads"]
        # a cold cell must fetch, a warm one must not: otherwise it is not what it claims
        rec["clean"] = (rec["downloads_load"] > 0) == (warm_n is None)
    rec.update(fetch_stats(log, t0, t1))
    return rec


CELLS = [
    ("embedded", False, None),
    ("ext-packed", False, None),
    ("ext-packed", True, None),
    ("ext-4k", False, None),
    ("ext-4k", True, None),
    ("ext-order", False, None),
    ("ext-order", True, None),
    ("ext-4k", False, 1),
    ("ext-4k", False, 4),
    ("ext-4k", False, 16),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=3, help="cold loads per cell (median)")
    ap.add_argument("--quick", action="store_true", help="MiniLM only, RTT 25 ms, 1 rep")
    ap.add_argument("--big-size", default="1GiB", help="the synthetic decoder's weights")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "deploy.json"))
    args = ap.parse_args()
    from cvmfs_modelio.campaign.experiments import fuse_unavailable_reason
    from cvmfs_modelio.core.jsonout import write_json
    from cvmfs_modelio.core.units import parse_size
    from cvmfs_modelio.models import corpus
    from cvmfs_modelio.sim.publish import PublishParams, publish
    from cvmfs_modelio.sim.server import serve

    why = fuse_unavailable_reason()
    if why is not None:
        print(f"bench_deploy: needs FUSE: {why}", file=sys.stderr)
        return 1
    reps = 1 if args.quick else args.reps
    t_start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    load_before = uptime()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-", dir="/var/tmp") as tmps:
        tmp = Path(tmps)
        src = tmp / "src"
        models: list[tuple[str, str, int, tuple[float, ...]]] = [
            ("minilm", "minilm-onnx", 0, (10.0, 25.0))
        ]
        if not args.quick:
            models.append(("decoder-1g", "decoder-onnx", parse_size(args.big_size), (25.0,)))
        if args.quick:
            models[0] = ("minilm", "minilm-onnx", 0, (25.0,))
        sizes: dict[str, int] = {}
        for name, kind, size, _rtts in models:
            raw = tmp / "raw" / name / "model.onnx"
            raw.parent.mkdir(parents=True)
            say(f"making {kind}")
            if size:
                corpus.make(kind, raw, size_bytes=size)
            else:
                corpus.make(kind, raw)
            sizes[name] = raw.stat().st_size
            make_layouts(raw, src / name, say)
            shutil.rmtree(raw.parent)
        say("publishing (4/8/16 MiB chunks)")
        publish(src, tmp / "store", PublishParams())
        with serve(tmp / "store") as srv:
            for name, _kind, _size, rtts in models:
                for rtt in rtts:
                    for layout, bundle, warm_n in CELLS:
                        runs = []
                        for i in range(reps):
                            say(
                                f"{name} rtt {rtt:g} {layout} bundle={bundle} warm={warm_n} "
                                f"rep {i + 1}/{reps}"
                            )
                            runs.append(
                                one_load(
                                    srv.url,
                                    tmp / "run",
                                    f"{name}/{layout}/model.onnx",
                                    rtt,
                                    bundle,
                                    warm_n,
                                )
                            )
                        rows.append(summarize(name, rtt, layout, bundle, warm_n, runs))
    load_after = uptime()
    print_table(rows)
    print(
        f"median of {reps} cold load(s) per cell, each on a fresh mount; "
        f"{time.monotonic() - t_start:.0f} s in all"
    )
    print(f"load before: {load_before}\nload after:  {load_after}")
    write_json(
        args.json,
        {
            "rows": rows,
            "reps": reps,
            "bandwidth_bytes_per_s": BANDWIDTH,
            "chunking": "4/8/16 MiB",
            "model_bytes": sizes,
            "uptime_before": load_before,
            "uptime_after": load_after,
        },
        schema="bench.deploy",
    )
    return 0


def _med(vals: list[Any]) -> Any:
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals)) if vals else None


def summarize(
    name: str, rtt: float, layout: str, bundle: bool, warm_n: int | None, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    keys = (
        "ttfi_ns",
        "session_ns",
        "warm_ns",
        "downloads_load",
        "fetches_load",
        "wire_bytes_load",
        "fetches_after_start",
        "wire_bytes_after_start",
        "serial_chain",
    )
    out: dict[str, Any] = {
        "model": name,
        "rtt_ms": rtt,
        "layout": layout,
        "bundle": bundle,
        "warm_parallel": warm_n,
        "reps": len(runs),
        "ttfi_runs_ns": [r["ttfi_ns"] for r in runs],
        "clean": all(r["clean"] for r in runs),
    }
    for k in keys:
        out[k] = _med([r.get(k) for r in runs])
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    from cvmfs_modelio.core.tables import format_table
    from cvmfs_modelio.core.units import fmt_bytes

    base = {
        (r["model"], r["rtt_ms"]): r["ttfi_ns"]
        for r in rows
        if r["layout"] == "embedded" and r["warm_parallel"] is None
    }
    table = []
    for r in rows:
        b = base.get((r["model"], r["rtt_ms"]))
        cell = r["layout"] + (" +bundle" if r["bundle"] else "")
        if r["warm_parallel"] is not None:
            cell += f" after warm -p {r['warm_parallel']}"
        spread = ""
        runs = [v for v in r["ttfi_runs_ns"] if v]
        if len(runs) > 1:
            spread = f"{min(runs) / 1e9:.2f}-{max(runs) / 1e9:.2f}"
        table.append(
            [
                r["model"],
                f"{r['rtt_ms']:g}",
                cell + ("" if r["clean"] else " (not clean!)"),
                f"{r['ttfi_ns'] / 1e9:.2f}" if r["ttfi_ns"] else "-",
                spread,
                f"{r['ttfi_ns'] / b:.2f}" if b and r["ttfi_ns"] else "-",
                f"{r['warm_ns'] / 1e9:.2f}" if r["warm_ns"] else "",
                str(r["fetches_load"]),
                fmt_bytes(r["wire_bytes_load"] or 0),
                str(r["serial_chain"]),
                fmt_bytes(r["wire_bytes_after_start"] or 0),
            ]
        )
    print(
        format_table(
            [
                "model",
                "rtt ms",
                "layout",
                "ttfi s",
                "range s",
                "x embedded",
                "warm s",
                "fetches",
                "wire bytes",
                "serial chain",
                "wire to unmount",
            ],
            table,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
