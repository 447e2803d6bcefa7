"""Time to first inference (session + first run) from local disk and from emulated CVMFS, for
every loader, cold/warm/hot, traced and untraced side by side (issue 9, item 9).

The corpus: the largest real CMS model, a synthetic ~90 MB model (MiniLM-sized) with weights
embedded and with external data, and the same weights as safetensors (the ``.onnx`` with
external data is the safetensors loaders' graph).  Loaders: ``ort`` on the ``.onnx`` files;
``safetensors-lazy``, ``safetensors-eager`` and ``streamer`` on the ``.safetensors``.

Locations: local disk (cold = warm: page cache dropped), and the emulated CVMFS stack of the
campaign (``sim.publish`` -> ``sim.server.serve`` -> ``sim.mount.SimMount`` with the user-space
WAN emulator) at 100 MiB/s and RTT 0, 5 and 25 ms, chunked 4/8/16 MiB (CVMFS's default); for
the loader table also 1/2/4 MiB and unchunked at the largest RTT.  Each cell: ``--reps``
untraced loads (no tracer, no profiler: timing only) and one traced load
(:func:`cvmfs_modelio.ort.load.run_load`), every load in a fresh child.

Prints the time-to-first-inference table and the loader table (how much of a cold load is
the client's chunk fetching, and how parallel it was), and saves everything to
``bench/results/first_inference.json``.  ``--quick``: 8 MiB synthetic model, RTT 0 and 25,
one repetition (~2 min).

    python bench/bench_first_inference.py [--reps 2] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_ns

ROOT = Path(__file__).resolve().parents[1]
CMS = ROOT.parent / "shared" / "models" / "cms"
MiB = 1 << 20
BANDWIDTH = 100 * MiB
STATES = ("cold", "warm", "hot")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def make_corpus(src: Path, weight_bytes: int) -> list[dict[str, Any]]:
    """Model files under ``src/<name>/``; one entry per (model, loader)."""
    from cvmfs_modelio.models.synthetic import make_model
    from cvmfs_modelio.ort.weights import onnx_to_safetensors

    cms = max(CMS.rglob("*.onnx"), key=lambda p: p.stat().st_size)
    (src / "cms").mkdir(parents=True)
    os.link(cms, src / "cms" / cms.name)
    make_model(src / "emb" / "model.onnx", weight_bytes, seed=11)
    ext = make_model(src / "ext" / "model.onnx", weight_bytes, external_data=True, seed=11)
    onnx_to_safetensors(ext.onnx, src / "ext" / "model.safetensors")
    mb = weight_bytes >> 20
    out = [
        {
            "model": f"cms {cms.parent.parent.name}/{cms.name}",
            "rel": f"cms/{cms.name}",
            "loader": "ort",
            "original": str(cms),
        },
        {"model": f"synthetic {mb} MiB embedded", "rel": "emb/model.onnx", "loader": "ort"},
        {"model": f"synthetic {mb} MiB external", "rel": "ext/model.onnx", "loader": "ort"},
    ]
    for loader in ("safetensors-lazy", "safetensors-eager", "streamer"):
        out.append(
            {
                "model": f"synthetic {mb} MiB safetensors",
                "rel": "ext/model.safetensors",
                "loader": loader,
            }
        )
    return out


def measure(
    root: Path,
    src: Path,
    entries: list[dict[str, Any]],
    where: dict[str, Any],
    reps: int,
    states: tuple[str, ...],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    from cvmfs_modelio.ort.load import run_load

    rows = []
    for e in entries:
        model = root / e["rel"]
        user = e.get("original") or str(src / e["rel"])
        for state in states:
            say(
                f"{where['location']} {where.get('config', '')} rtt {where.get('rtt_ms', '-')}: "
                f"{e['model']} {e['loader']} {state}"
            )
            plain = run_load(
                model, state=state, loader=e["loader"], repeat=reps, trace=False, display_name=user
            )
            traced = run_load(
                model, state=state, loader=e["loader"], repeat=1, trace=True, display_name=user
            )
            for kind, res in (("untraced", plain), ("traced", traced)):
                rows.append(row(e, where, state, kind, res))
    return rows


def _median(vals: list[int]) -> int | None:
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals)) if vals else None


def row(
    e: dict[str, Any], where: dict[str, Any], state: str, kind: str, res: Any
) -> dict[str, Any]:
    def phase_ns(name: str) -> int | None:
        return _median([r.phase(name).wall_ns for r in res.runs if r.phase(name)])

    fetch = [r.fetch for r in res.runs if r.fetch]
    load_phase = "weights_load" if e["loader"] != "ort" else "session"
    return {
        "model": e["model"],
        "loader": e["loader"],
        **where,
        "state": state,
        "kind": kind,
        "reps": len(res.runs),
        "ttfi_ns": res.time_to_first_inference_ns(),
        "ttfi_runs_ns": [r.time_to_first_inference_ns for r in res.runs],
        "load_ns": phase_ns(load_phase),
        "session_ns": phase_ns("session"),
        "first_run_ns": phase_ns("first_run"),
        "fetch_chunks": _median([f["chunks"] for f in fetch]) if fetch else 0,
        "fetch_busy_ns": _median([f["busy_ns"] for f in fetch]) if fetch else None,
        "fetch_sum_ns": _median([f["sum_ns"] for f in fetch]) if fetch else None,
        "mean_concurrency": statistics.median(
            [f["mean_concurrency"] for f in fetch if f["mean_concurrency"]]
        )
        if fetch
        else None,
        "read_bytes": res.runs[0].totals.get("read_bytes", 0),
        "mmap_bytes": res.runs[0].totals.get("mmap_touched_bytes", 0),
        "downloads": _median(
            [r.counters_delta.get("fetch.n_downloads", 0) for r in res.runs if r.counters_delta]
        )
        if res.runs[0].counters_delta
        else None,
        "notes": sorted({n for r in res.runs for n in r.notes}),
        "clean": all(r.state.get("clean", True) for r in res.runs),
    }


def stage(src: Path, dest: Path) -> None:
    for f in src.rglob("*"):
        if f.is_file():
            t = dest / f.relative_to(src)
            t.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=2, help="untraced loads per cell (median)")
    ap.add_argument("--quick", action="store_true", help="8 MiB model, RTT 0/25, 1 rep")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "first_inference.json"))
    args = ap.parse_args()
    from cvmfs_modelio.campaign.experiments import fuse_unavailable_reason
    from cvmfs_modelio.sim.mount import MountOptions, SimMount
    from cvmfs_modelio.sim.publish import PublishParams, publish
    from cvmfs_modelio.sim.server import serve

    reps = 1 if args.quick else args.reps
    weight = (8 if args.quick else 88) * MiB
    rtts = (0.0, 25.0) if args.quick else (0.0, 5.0, 25.0)
    t_start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    load_before = uptime()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-first-inference-") as tmps:
        tmp = Path(tmps)
        src = tmp / "src"
        entries = make_corpus(src, weight)
        rows += measure(src, src, entries, {"location": "local"}, reps, STATES, say)
        why = fuse_unavailable_reason()
        configs = [
            ("4/8/16 MiB", PublishParams(4 * MiB, 8 * MiB, 16 * MiB)),
            ("1/2/4 MiB", PublishParams(1 * MiB, 2 * MiB, 4 * MiB)),
            ("unchunked", PublishParams(chunking=False)),
        ]
        if why is not None:
            say(f"no emulated CVMFS: {why}")
        for ci, (label, params) in enumerate(configs if why is None else []):
            store = tmp / f"store{ci}"
            staged = tmp / f"staged{ci}"
            stage(src, staged)
            publish(staged, store, params)
            # The default configuration at every RTT; the others at the largest only, cold,
            # for the loader table.
            cell_rtts = rtts if ci == 0 else (rtts[-1],)
            cell_states = STATES if ci == 0 else ("cold",)
            cell_entries = (
                entries if ci == 0 else [e for e in entries if e["rel"].startswith("ext/")]
            )
            with serve(store) as srv:
                for rtt in cell_rtts:
                    mp = tmp / f"mnt{ci}-{int(rtt)}"
                    mp.mkdir()
                    opts = MountOptions(
                        cache=tmp / f"cache{ci}-{int(rtt)}", rtt_ms=rtt, bandwidth=BANDWIDTH
                    )
                    with SimMount(srv.url, mp, opts):
                        where = {
                            "location": "cvmfs",
                            "config": label,
                            "rtt_ms": rtt,
                            "bandwidth_bytes_per_s": BANDWIDTH,
                        }
                        rows += measure(mp, src, cell_entries, where, reps, cell_states, say)
            shutil.rmtree(store)
            shutil.rmtree(staged)
    load_after = uptime()
    print_tables(rows, rtts[-1])
    print(
        f"untraced: median of {reps} loads per cell; traced: 1 load; "
        f"{time.monotonic() - t_start:.0f} s in all"
    )
    print(f"load before: {load_before}\nload after:  {load_after}")
    write_json(
        args.json,
        {
            "rows": rows,
            "reps": reps,
            "rtts_ms": list(rtts),
            "bandwidth_bytes_per_s": BANDWIDTH,
            "weight_bytes": weight,
            "uptime_before": load_before,
            "uptime_after": load_after,
        },
        schema="bench.first_inference",
    )
    return 0


def print_tables(rows: list[dict[str, Any]], big_rtt: float) -> None:
    def get(model: str, loader: str, where: str, state: str, kind: str) -> dict[str, Any] | None:
        for r in rows:
            w = "local" if r["location"] == "local" else f"{r['rtt_ms']:g} ms"
            if (r["model"], r["loader"], w, r["state"], r["kind"]) == (
                model,
                loader,
                where,
                state,
                kind,
            ) and r.get("config", "4/8/16 MiB") == "4/8/16 MiB":
                return r
        return None

    keys = list(dict.fromkeys((r["model"], r["loader"]) for r in rows))
    wheres = list(
        dict.fromkeys("local" if r["location"] == "local" else f"{r['rtt_ms']:g} ms" for r in rows)
    )
    head = ["model", "loader", "where", "cold", "warm", "hot", "cold traced", "traced/untraced"]
    body = []
    for model, loader in keys:
        for w in wheres:
            cells = []
            for st in STATES:
                r = get(model, loader, w, st, "untraced")
                cells.append(fmt_ns(r["ttfi_ns"]) if r and r["ttfi_ns"] else "-")
            rt = get(model, loader, w, "cold", "traced")
            ru = get(model, loader, w, "cold", "untraced")
            ratio = (
                f"{rt['ttfi_ns'] / ru['ttfi_ns']:.2f}x"
                if rt and ru and rt["ttfi_ns"] and ru["ttfi_ns"]
                else "-"
            )
            body.append(
                [
                    model,
                    loader,
                    w,
                    *cells,
                    fmt_ns(rt["ttfi_ns"]) if rt and rt["ttfi_ns"] else "-",
                    ratio,
                ]
            )
    print(
        "time to first inference (session + first run; weights load included for the "
        "safetensors loaders), emulated CVMFS 4/8/16 MiB chunks at 100 MiB/s"
    )
    print(format_table(head, body))
    from cvmfs_modelio.ort.tables import format_loader_rows

    lrows = []
    for r in rows:
        if not (
            r["location"] == "cvmfs"
            and r["rtt_ms"] == big_rtt
            and r["state"] == "cold"
            and r["kind"] == "untraced"
            and r["model"].endswith(("external", "safetensors"))
        ):
            continue
        traced = next(
            (
                t
                for t in rows
                if t["kind"] == "traced"
                and all(
                    t.get(k) == r.get(k) for k in ("model", "loader", "config", "rtt_ms", "state")
                )
            ),
            {},
        )
        # Times from the untraced loads; bytes read and mapped from the traced one.
        lrows.append(
            {
                **r,
                "read_bytes": traced.get("read_bytes", 0),
                "mmap_bytes": traced.get("mmap_bytes", 0),
            }
        )
    print(
        f"\nloaders, cold, RTT {big_rtt:g} ms, 100 MiB/s: fetch busy = time at least one chunk "
        "download was in flight; share = of the time to first inference"
    )
    print(format_loader_rows(lrows))


if __name__ == "__main__":
    sys.exit(main())
