"""KServe's time to first inference per storage path, with KServe's own code (issue 9, item 6).

For the largest real CMS model (``../shared/models/cms``) and the real all-MiniLM-L6-v2
encoder as ONNX (assembled from ``../shared/models/minilm``, 87 MiB, weights embedded),
``cvmfs_modelio.serving.compare.run_compare`` measures, at RTT 0, 10 and 25 ms and
100 MiB/s, cold and hot, ``--reps`` times each, from the first process start to the first
successful v2 REST inference:

- download: ``kserve_storage.Storage.download`` over HTTP (the builtin stratum's server
  behind the WAN emulator) into an empty directory, then KServe's ``ModelServer``;
- cvmfs: the ``ModelServer`` reading in place from the emulated CVMFS mount;
- local: the ``ModelServer`` reading a local copy (the floor).

Prints one table per model (medians), then the ratio table that answers the question
(cvmfs / download per RTT and state, and each path's time above the local floor), and
saves everything to ``bench/results/kserve.json``.  ``--quick``: the CMS model only, RTT 0
and 25, one repetition (~1 min).

    python bench/bench_kserve.py [--reps 3] [--quick] [--json PATH] [--from-json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_ns

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "models"
MiB = 1 << 20
BANDWIDTH = 100 * MiB
PATHS = ("download", "cvmfs", "local")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def models(tmp: Path, quick: bool) -> list[tuple[str, Path]]:
    cms = max((SHARED / "cms").rglob("*.onnx"), key=lambda p: p.stat().st_size)
    out = [("cms " + cms.parent.parent.name, cms)]
    if not quick and (SHARED / "minilm" / "model.safetensors").is_file():
        from cvmfs_modelio.models.corpus import make

        dest = tmp / "minilm" / "minilm.onnx"
        dest.parent.mkdir()
        make("minilm-onnx", dest, minilm_dir=SHARED / "minilm")
        out.append(("minilm", dest))
    return out


def _median(values: list[int]) -> int:
    return round(statistics.median(values))


def ratio_rows(name: str, runs: list[dict[str, Any]]) -> list[list[str]]:
    """Per RTT and state: each path's median time to first inference, cvmfs/download, and
    the same without the model server's Python imports (``total - import``: the part the
    storage path changes; the imports, ~0.5 s idle and >1.5 s at load 7, are the same on
    every path and carry most of the run-to-run noise)."""

    def med(path: str, rtt: float | None, state: str, minus_import: bool) -> int | None:
        v = [
            r["total_ns"] - (r["import_ns"] if minus_import else 0)
            for r in runs
            if (r["path"], r["rtt_ms"], r["state"]) == (path, rtt, state)
        ]
        return _median(v) if v else None

    out = []
    rtts = sorted({r["rtt_ms"] for r in runs if r["rtt_ms"] is not None})
    for state in ("cold", "hot"):
        for rtt in rtts:
            t = [med(p, rtt if p != "local" else None, state, False) for p in PATHS]
            x = [med(p, rtt if p != "local" else None, state, True) for p in PATHS]
            if None in t or None in x:
                continue
            dl, cv, lo = (int(v) for v in t if v is not None)
            xdl, xcv, xlo = (int(v) for v in x if v is not None)
            out.append(
                [
                    name,
                    f"{rtt:g} ms",
                    state,
                    fmt_ns(dl),
                    fmt_ns(cv),
                    fmt_ns(lo),
                    f"{cv / dl:.2f}",
                    fmt_ns(xdl),
                    fmt_ns(xcv),
                    fmt_ns(xlo),
                    f"{xcv / xdl:.2f}",
                ]
            )
    return out


def storage_rows(name: str, runs: list[dict[str, Any]]) -> list[list[str]]:
    """Per RTT and state, the part of the start that the storage path changes, medians:
    download = ``Storage.download()`` + the session on the downloaded copy; cvmfs and local =
    the session (ONNX Runtime reading the model, lazily through the mount or from disk).
    ``noise``: interquartile range / median of the local floor's whole time to first
    inference in that state (the machine's noise, mostly Python imports under load)."""

    def part(r: dict[str, Any]) -> int:
        return int(r["session_ns"]) + int(r["transfer_ns"] or 0)

    def med(path: str, rtt: float | None, state: str) -> int | None:
        v = [part(r) for r in runs if (r["path"], r["rtt_ms"], r["state"]) == (path, rtt, state)]
        return _median(v) if v else None

    out = []
    rtts = sorted({r["rtt_ms"] for r in runs if r["rtt_ms"] is not None})
    for state in ("cold", "hot"):
        floor = sorted(r["total_ns"] for r in runs if (r["path"], r["state"]) == ("local", state))
        if len(floor) >= 4:
            q = statistics.quantiles(floor, n=4)
            noise = f"{(q[2] - q[0]) / statistics.median(floor):.0%}"
        else:
            noise = "-"
        for rtt in rtts:
            v = [med(p, rtt if p != "local" else None, state) for p in PATHS]
            if None in v:
                continue
            dl, cv, lo = (int(x) for x in v if x is not None)
            out.append(
                [
                    name,
                    f"{rtt:g} ms",
                    state,
                    fmt_ns(dl),
                    fmt_ns(cv),
                    fmt_ns(lo),
                    f"{cv / dl:.2f}",
                    noise,
                ]
            )
    return out


STORAGE_HEADER = ["model", "RTT", "state", "download", "cvmfs", "local", "cvmfs/dl", "noise"]


def print_summary(results: list[dict[str, Any]]) -> None:
    ratios: list[list[str]] = []
    storage: list[list[str]] = []
    for res in results:
        ratios += ratio_rows(res["name"], res["runs"])
        storage += storage_rows(res["name"], res["runs"])
    print(
        "\nTime to first inference (medians): download, cvmfs, local, cvmfs/download; "
        "then the same without the model server's Python imports (-imp)"
    )
    print(format_table(HEADER, ratios))
    print(
        "\nThe storage part (medians): download = transfer + session, cvmfs and local = "
        "session; noise = IQR/median of the local floor's whole time"
    )
    print(format_table(STORAGE_HEADER, storage))


HEADER = [
    "model",
    "RTT",
    "state",
    "download",
    "cvmfs",
    "local",
    "cvmfs/dl",
    "dl -imp",
    "cvmfs -imp",
    "local -imp",
    "cvmfs/dl -imp",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "kserve.json"))
    ap.add_argument("--from-json", metavar="PATH", help="print the summary of a saved run")
    args = ap.parse_args()
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        print_summary(doc["models"])
        print(f"load before: {doc['uptime_before']}\nload after:  {doc['uptime_after']}")
        return 0
    from cvmfs_modelio.serving.compare import format_rows, run_compare
    from cvmfs_modelio.serving.params import CompareParams

    rtts = (0.0, 25.0) if args.quick else (0.0, 10.0, 25.0)
    reps = 1 if args.quick else args.reps
    params = CompareParams(rtts_ms=rtts, bandwidths=(BANDWIDTH,), reps=reps)
    load_before = uptime()
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []

    def say(msg: str) -> None:
        print(f"[bench_kserve {time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-kserve-") as tmp:
        for name, path in models(Path(tmp), args.quick):
            say(f"{name}: {path.name} ({path.stat().st_size / MiB:.1f} MiB)")
            res = run_compare(path, params, progress=say)
            print(f"\n{name} ({path.stat().st_size / MiB:.1f} MiB), medians of {reps}")
            print(format_rows(res.rows))
            payload = res.to_payload()
            payload["name"] = name
            results.append(payload)
    load_after = uptime()
    print_summary(results)
    print(f"{time.monotonic() - t0:.0f} s in all")
    print(f"load before: {load_before}\nload after:  {load_after}")
    write_json(
        args.json,
        {
            "models": results,
            "reps": reps,
            "rtts_ms": list(rtts),
            "bandwidth_bytes_per_s": BANDWIDTH,
            "uptime_before": load_before,
            "uptime_after": load_after,
        },
        schema="bench.kserve",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
