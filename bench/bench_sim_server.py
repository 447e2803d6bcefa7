"""Builtin stratum vs nginx (vs squid in front) over loopback, and the WAN emulator's own cost.

For each stack: throughput of one 64 MiB object and latency of one 4 KiB object, both over
one kept-alive connection, with a raw-socket client (recv_into, no HTTP library overhead).
Each stack runs as ``cvmfs-modelio sim serve`` in its own process (as a FUSE client would
meet it).  Stacks are measured round-robin for several rounds; the table shows medians over
rounds of per-round medians.  Squid rows are cache hits (the object is fetched once before timing).

    python bench/bench_sim_server.py [--rounds 5] [--json bench/results/sim_server.json]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.units import fmt_ns, fmt_rate
from cvmfs_modelio.sim.publish import PublishParams, iter_objects, publish

LARGE = 64 << 20
SMALL = 4 << 10
RESULTS = Path(__file__).resolve().parent / "results" / "sim_server.json"


class RawClient:
    """HTTP/1.1 GETs over one kept-alive connection, directly or through a forward proxy."""

    def __init__(self, connect_url: str, origin_url: str | None = None) -> None:
        host, port = connect_url.split("//")[1].split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.prefix = origin_url or ""
        self.buf = bytearray(4 << 20)
        self.view = memoryview(self.buf)

    def get(self, path: str) -> int:
        """Fetch ``path``, discard the body; returns the body size in bytes."""
        self.sock.sendall(f"GET {self.prefix}{path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            head += chunk
        h, _, rest = head.partition(b"\r\n\r\n")
        if not h.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(h.split(b"\r\n")[0].decode())
        length = next(
            int(line.split(b":")[1])
            for line in h.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        got = len(rest)
        while got < length:
            n = self.sock.recv_into(self.view, min(len(self.buf), length - got))
            if n == 0:
                raise EOFError("short body")
            got += n
        return length

    def close(self) -> None:
        self.sock.close()


def measure(
    client: RawClient, large: str, small: str, n_large: int, n_small: int
) -> dict[str, float]:
    """Median throughput (bytes/s) of the large object and latency (ns) of the small one."""
    client.get(large)
    for _ in range(20):
        client.get(small)
    ts = []
    for _ in range(n_large):
        t0 = time.perf_counter_ns()
        size = client.get(large)
        ts.append(time.perf_counter_ns() - t0)
    lat = []
    for _ in range(n_small):
        t0 = time.perf_counter_ns()
        client.get(small)
        lat.append(time.perf_counter_ns() - t0)
    lat.sort()
    return {
        "large_bytes_per_s": size / statistics.median(ts) * 1e9,
        "small_median_ns": statistics.median(lat),
        "small_p90_ns": lat[int(0.9 * (len(lat) - 1))],
    }


def make_store(base: Path) -> tuple[Path, str, str]:
    src = base / "src"
    src.mkdir()
    rng = np.random.Generator(np.random.PCG64(42))
    (src / "large.bin").write_bytes(rng.bytes(LARGE))
    (src / "small.bin").write_bytes(rng.bytes(SMALL))
    store = base / "store"
    publish(src, store, PublishParams(chunking=False, compression="none"))
    objs = {p.stat().st_size: "/" + str(p.relative_to(store)) for p in iter_objects(store)}
    return store, objs[LARGE], objs[SMALL]


STACKS: list[tuple[str, list[str]]] = [
    # label, `sim serve` options
    ("builtin", ["--server", "builtin"]),
    ("nginx", ["--server", "nginx"]),
    ("builtin + squid (hit)", ["--server", "builtin", "--proxy", "squid"]),
    ("nginx + squid (hit)", ["--server", "nginx", "--proxy", "squid"]),
    ("netem(no limit) -> builtin", ["--server", "builtin", "--netem"]),
    ("netem(no limit) -> nginx", ["--server", "nginx", "--netem"]),
]


class ServeProcess:
    """``cvmfs-modelio sim serve`` in its own process (the builtin server gets its own GIL)."""

    def __init__(self, store: Path, options: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cvmfs_modelio.cli", "sim", "serve", str(store), *options],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = ""
        self.proxy: str | None = None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("stratum "):
                self.url = line.split()[1]
            elif line.startswith("proxy "):
                self.proxy = line.split()[1]
            elif line.startswith("serving"):
                break
        if not self.url:
            raise RuntimeError(f"sim serve {' '.join(options)} did not start")

    def client(self) -> RawClient:
        return RawClient(self.proxy, self.url) if self.proxy else RawClient(self.url)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)


def _rounds(
    args: argparse.Namespace,
    stacks: list[tuple[str, list[str]]],
    servers: dict[str, ServeProcess],
    results: dict[str, list[dict[str, float]]],
    large: str,
    small: str,
) -> None:
    """Measure every stack once per round, round-robin (so drift hits all stacks alike)."""
    for r in range(args.rounds):
        for label, _ in stacks:
            c = servers[label].client()
            try:
                results[label].append(measure(c, large, small, args.large_gets, args.small_gets))
            finally:
                c.close()
        sys.stderr.write(f"round {r + 1}/{args.rounds} done\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--large-gets", type=int, default=7)
    ap.add_argument("--small-gets", type=int, default=500)
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args(argv)
    have = {"nginx": shutil.which("nginx") is not None, "squid": shutil.which("squid") is not None}
    stacks = [(label, o) for label, o in STACKS if all(have[k] for k in have if k in o)]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in stacks}
    servers: dict[str, ServeProcess] = {}
    with tempfile.TemporaryDirectory(prefix="cmio-bench-server-") as d:
        store, large, small = make_store(Path(d))
        try:
            for label, options in stacks:
                servers[label] = ServeProcess(store, options)
            _rounds(args, stacks, servers, results, large, small)
        finally:
            for sp in servers.values():
                sp.stop()
    summary = {
        label: {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        for label, runs in results.items()
    }
    lines = [
        f"{'stack':<28}{'64 MiB GET':>14}{'4 KiB GET median':>18}{'p90':>11}",
    ]
    for label, s in summary.items():
        lines.append(
            f"{label:<28}{fmt_rate(s['large_bytes_per_s']):>14}"
            f"{fmt_ns(s['small_median_ns']):>18}{fmt_ns(s['small_p90_ns']):>11}"
        )
    for server in ("builtin", "nginx"):
        key = f"netem(no limit) -> {server}"
        if key in summary and server in summary:
            thr = summary[key]["large_bytes_per_s"] / summary[server]["large_bytes_per_s"]
            lat = summary[key]["small_median_ns"] - summary[server]["small_median_ns"]
            lines.append(f"netem cost over {server}: throughput x{thr:.2f}, latency +{fmt_ns(lat)}")
    print("\n".join(lines))
    out: dict[str, Any] = {
        "benchmark": "sim_server",
        "large_bytes": LARGE,
        "small_bytes": SMALL,
        "rounds": args.rounds,
        "large_gets_per_round": args.large_gets,
        "small_gets_per_round": args.small_gets,
        "median_of_rounds": summary,
        "rounds_raw": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(
        args.json, out, schema="bench.sim_server", tools=True, measured=[tempfile.gettempdir()]
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
