"""Legitimate GETs while abusive clients hold the stratum: builtin vs nginx, with and without.

Each stack runs as ``cvmfs-modelio sim serve`` in its own process.  Per round and stack: the
latency of ``--gets`` GETs of one object (new connection each, answer read whole, 10 s
timeout) with no attack (baseline), then with the attack mix of tests/fuzz/hostile_clients.py
running (slowloris, idle, garbage, > 64 KiB heads, slow readers).  Rounds alternate stacks
and conditions so that drift hits all alike; the table shows medians over rounds of per-round
medians and p99s, the fraction served, and the ratio attacked/baseline.  Loopback only.

    python bench/bench_hostile.py [--rounds 3] [--gets 40] [--json bench/results/hostile.json]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the attack mix lives with the tests that use it too

from tests.fuzz.hostile_clients import HostileLoad, legit_get  # noqa: E402

from cvmfs_modelio.core.jsonout import write_json  # noqa: E402
from cvmfs_modelio.core.tables import format_table  # noqa: E402
from cvmfs_modelio.sim.publish import PublishParams, iter_objects, publish  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "hostile.json"
MIX = {"slowloris": 200, "idle": 100, "garbage": 4, "huge": 2, "slow_reader": 8}
STACKS = {"builtin": ["--server", "builtin"], "nginx": ["--server", "nginx"]}


class ServeProcess:
    """``cvmfs-modelio sim serve`` in its own process."""

    def __init__(self, store: Path, options: list[str]) -> None:
        cmd = [sys.executable, "-m", "cvmfs_modelio.cli", "sim", "serve", str(store), *options]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.port = 0
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("stratum "):
                self.port = int(line.split()[1].rsplit(":", 1)[1])
            elif line.startswith("serving"):
                break
        if not self.port:
            raise RuntimeError(f"sim serve {' '.join(options)} did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)


def measure(port: int, path: str, body: bytes, gets: int) -> dict[str, float]:
    lat, served = [], 0
    for _ in range(gets):
        a = legit_get(port, path)
        if a is not None and a[1] == 200 and a[2] == body:
            served += 1
            lat.append(a[0])
    return {
        "served_fraction": served / gets,
        "median_ns": float(np.median(lat)) if lat else float("nan"),
        "p99_ns": float(np.percentile(lat, 99)) if lat else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--gets", type=int, default=40, help="GETs per measurement (default 40)")
    ap.add_argument("--json", default=str(RESULTS), help=f"JSON output (default {RESULTS})")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "w.bin").write_bytes(np.random.Generator(np.random.PCG64(2)).bytes(1 << 20))
        store = Path(tmp) / "store"
        publish(src, store, PublishParams(chunking=False, compression="none"))
        obj = max(iter_objects(store), key=lambda p: p.stat().st_size)
        path, body = "/" + str(obj.relative_to(store)), obj.read_bytes()
        servers = {k: ServeProcess(store, v) for k, v in STACKS.items()}
        raw: dict[str, list[dict[str, Any]]] = {
            f"{k}/{c}": [] for k in STACKS for c in ("baseline", "attacked")
        }
        counts: dict[str, dict[str, int]] = {}
        try:
            for r in range(args.rounds):
                for k, srv in servers.items():
                    raw[f"{k}/baseline"].append(measure(srv.port, path, body, args.gets))
                    with HostileLoad(srv.port, MIX, big_path=path, drip_s=0.5) as attack:
                        raw[f"{k}/attacked"].append(measure(srv.port, path, body, args.gets))
                    counts[f"{k}/round{r}"] = dict(attack.counts)
                    print(f"round {r + 1}/{args.rounds} {k} done", file=sys.stderr)
        finally:
            for srv in servers.values():
                srv.stop()
    load_after = os.getloadavg()
    summary: dict[str, dict[str, float]] = {}
    for key, rounds in raw.items():
        summary[key] = {
            m: statistics.median(x[m] for x in rounds)
            for m in ("served_fraction", "median_ns", "p99_ns")
        }
    rows = []
    for k in STACKS:
        b, a = summary[f"{k}/baseline"], summary[f"{k}/attacked"]
        for cond, s in (("baseline", b), ("attacked", a)):
            rows.append(
                [
                    k,
                    cond,
                    f"{s['served_fraction']:.0%}",
                    f"{s['median_ns'] / 1e6:.2f}",
                    f"{s['p99_ns'] / 1e6:.2f}",
                    f"{s['median_ns'] / b['median_ns']:.2f}",
                ]
            )
    print(
        format_table(
            ["stack", "clients", "served", "median ms", "p99 ms", "median / baseline"], rows
        )
    )
    print(
        f"1 MiB object, {args.gets} GETs x {args.rounds} rounds; attack mix {MIX}; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (2 shared cores)"
    )
    out = {
        "object_bytes": len(body),
        "gets_per_measurement": args.gets,
        "rounds": args.rounds,
        "attack_mix": MIX,
        "loadavg_1min_before": load_before[0],
        "loadavg_1min_after": load_after[0],
        "median_of_rounds": summary,
        "rounds_raw": raw,
        "attack_counts": counts,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, out, schema="bench.hostile", tools=True, measured=[tempfile.gettempdir()])
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
