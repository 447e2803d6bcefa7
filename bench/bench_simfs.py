"""The emulated CVMFS client (cmio-simfs) against direct reads, the HTTP limit and cvmfs2.

Warm (client cache warm, FUSE page cache dropped with fadvise DONTNEED before every run):
sequential throughput and 4 KiB random-read latency through the mount, beside direct reads
of the same file (page cache warm) and the real cvmfs2 2.12 client's figures measured on
this machine type.  Cold (client cache and page cache emptied): sequential read of the file
through the mount beside the loopback HTTP limit (curl fetching the same objects in the
same order over one connection, nothing else), at several round-trip times through the
user-space network emulator; plus the opt-in ``--prefetch`` experiment.  Measurements are
interleaved round-robin; the table shows medians over rounds.

    python bench/bench_simfs.py [--size 256MiB] [--rounds 5] [--rtts 0,1,10]
                                [--json bench/results/simfs.json]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
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
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns, fmt_rate, parse_size
from cvmfs_modelio.sim.catalog import open_store_catalog
from cvmfs_modelio.sim.mount import MountOptions, NetemChild, SimMount
from cvmfs_modelio.sim.publish import PublishParams, publish

RESULTS = Path(__file__).resolve().parent / "results" / "simfs.json"
# The real client (cvmfs2 2.12) on this machine type, FUSE page cache dropped, own cache
# warm (from the issue); local disk warm for reference.
REAL_SEQ_BPS = (2.1e9, 2.4e9)
REAL_RAND_NS = (33_000, 35_000)
REAL_DISK_RAND_NS = 1_000
READ_BLOCK = 1 << 20
PAGE = 4096


def drop(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def seq_read(path: Path) -> tuple[int, int]:
    """Read the whole file in 1 MiB blocks; (bytes, ns)."""
    buf = bytearray(READ_BLOCK)
    total = 0
    t0 = time.perf_counter_ns()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total, time.perf_counter_ns() - t0


def rand_lat(path: Path, offsets: list[int]) -> float:
    """Median latency (ns) of 4 KiB preads at ``offsets``."""
    fd = os.open(path, os.O_RDONLY)
    lat = []
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for off in offsets:
            t0 = time.perf_counter_ns()
            os.pread(fd, PAGE, off)
            lat.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
    return float(statistics.median(lat))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``cvmfs-modelio sim serve`` (builtin) in its own process, as a client meets it."""
    port = free_port()
    argv = [sys.executable, "-m", "cvmfs_modelio.cli", "sim", "serve", str(store)]
    proc = subprocess.Popen(
        [*argv, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench: sim serve did not start")


def http_limit(url: str, objects: list[str]) -> int:
    """ns for curl to GET ``objects`` in order over one connection (bodies discarded)."""
    argv = ["curl", "-s", "--fail", "--noproxy", "*"]
    for o in objects:
        argv += ["-o", "/dev/null", f"{url}/{o}"]
    t0 = time.perf_counter_ns()
    subprocess.run(argv, check=True)
    return time.perf_counter_ns() - t0


def med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256MiB", help="file size (default 256MiB)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--random-reads", type=int, default=2000)
    ap.add_argument("--rtts", default="0,1,10", help="round-trip times in ms (default 0,1,10)")
    ap.add_argument("--prefetch", type=int, default=4, help="chunks ahead in the experiment")
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args()
    size = parse_size(args.size, "--size")
    rtts = [float(x) for x in args.rtts.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-simfs-"))
    server = None
    try:
        src = work / "src"
        src.mkdir()
        direct = src / "model.bin"
        rng = np.random.default_rng(1)
        with open(direct, "wb") as f:
            for _ in range(0, size, 1 << 24):
                f.write(rng.bytes(min(1 << 24, size - f.tell())))
        store = work / "store"
        print(f"publishing {fmt_bytes(size)} ...", flush=True)
        publish(src, store, PublishParams())
        with open_store_catalog(store) as cat:
            chunks = cat.chunks("/model.bin")
        objects = [f"data/{c.hash[:2]}/{c.hash[2:]}P" for c in chunks]
        wire = sum((store / o).stat().st_size for o in objects)
        server, url = start_server(store)
        mnt = work / "mnt"
        mnt.mkdir()
        pick = random.Random(7)
        offsets = [pick.randrange(0, size // PAGE) * PAGE for _ in range(args.random_reads)]

        # ---------------------------------------------------------------- warm
        warm: dict[str, list[float]] = {
            k: [] for k in ("mnt_seq", "dir_seq", "mnt_rand", "dir_rand")
        }
        with SimMount(url, mnt, MountOptions(cache=work / "cache", client_profile="fast")) as m:
            path = m.path / "model.bin"
            seq_read(path)  # client cache warm
            seq_read(direct)  # page cache warm
            os.sync()  # settle: no writeback of fresh cache files during the runs
            for r in range(args.rounds):
                print(f"warm round {r + 1}/{args.rounds}", flush=True)
                drop(path)
                n, ns = seq_read(path)
                assert n == size
                warm["mnt_seq"].append(n / ns * 1e9)
                n, ns = seq_read(direct)
                warm["dir_seq"].append(n / ns * 1e9)
                drop(path)
                warm["mnt_rand"].append(rand_lat(path, offsets))
                warm["dir_rand"].append(rand_lat(direct, offsets))
            c = m.counters()
            assert c["fetch.n_downloads"] == len(chunks) + 1  # catalog + each chunk once

        # ---------------------------------------------------------------- cold
        cold: dict[str, dict[str, list[float]]] = {}
        for rtt in rtts:
            key = f"{rtt:g}"
            cold[key] = {"http": [], "mount": [], "prefetch": []}
            net: NetemChild | None = None
            base_url = url
            if rtt > 0:
                net = NetemChild("127.0.0.1", int(url.rsplit(":", 1)[1]), rtt, 0)
                base_url = f"http://127.0.0.1:{net.port}"
            try:
                mounts: dict[str, SimMount] = {}
                for label, pf in (("mount", 0), ("prefetch", args.prefetch)):
                    (work / f"mnt_{label}").mkdir(exist_ok=True)
                    opts = MountOptions(
                        cache=work / f"cache_{label}_{key}", prefetch=pf, client_profile="fast"
                    )
                    mounts[label] = SimMount(base_url, work / f"mnt_{label}", opts)
                    mounts[label].start()
                try:
                    for r in range(args.rounds):
                        print(f"cold rtt={key} ms round {r + 1}/{args.rounds}", flush=True)
                        cold[key]["http"].append(size / http_limit(base_url, objects) * 1e9)
                        for label, mm in mounts.items():
                            mm.cleanup()
                            n, ns = seq_read(mm.path / "model.bin")
                            assert n == size
                            cold[key][label].append(n / ns * 1e9)
                finally:
                    for mm in mounts.values():
                        mm.stop()
            finally:
                if net is not None:
                    net.stop()
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)

    # ---------------------------------------------------------------- report
    real_seq = sum(REAL_SEQ_BPS) / 2
    real_rand = sum(REAL_RAND_NS) / 2
    rows: list[tuple[str, str, str, str]] = []
    ms, ds = med(warm["mnt_seq"]), med(warm["dir_seq"])
    mr, dr = med(warm["mnt_rand"]), med(warm["dir_rand"])
    rows.append(
        (
            "warm sequential, cmio-simfs",
            fmt_rate(ms),
            "real cvmfs2: 2.1-2.4 GB/s",
            f"{ms / real_seq:.2f}x cvmfs2",
        )
    )
    rows.append(
        ("warm sequential, direct (page cache)", fmt_rate(ds), "", f"{ms / ds:.2f}x direct")
    )
    rows.append(
        (
            "warm 4 KiB random read, cmio-simfs",
            fmt_ns(mr),
            "real cvmfs2: 33-35 us",
            f"{real_rand / mr:.2f}x cvmfs2 speed",
        )
    )
    rows.append(("warm 4 KiB random read, direct", fmt_ns(dr), "local disk warm: 1 us", ""))
    for key, d in cold.items():
        h, c_, p = med(d["http"]), med(d["mount"]), med(d["prefetch"])
        rows.append((f"cold sequential, rtt {key} ms, HTTP limit (curl)", fmt_rate(h), "", ""))
        rows.append(
            (
                f"cold sequential, rtt {key} ms, cmio-simfs",
                fmt_rate(c_),
                "",
                f"{c_ / h:.2f}x HTTP limit",
            )
        )
        rows.append(
            (
                f"cold sequential, rtt {key} ms, --prefetch {args.prefetch}",
                fmt_rate(p),
                "",
                f"{p / h:.2f}x HTTP limit",
            )
        )
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    print(
        f"\nfile {fmt_bytes(size)} in {len(chunks)} chunks ({fmt_bytes(wire)} on the wire), "
        f"medians of {args.rounds} rounds"
    )
    for row in rows:
        print("  ".join(x.ljust(w[i]) for i, x in enumerate(row)).rstrip())

    result: dict[str, Any] = {
        "file_bytes": size,
        "chunks": len(chunks),
        "wire_bytes": wire,
        "rounds": args.rounds,
        "random_reads": args.random_reads,
        "warm": {
            "simfs_seq_bytes_per_s": warm["mnt_seq"],
            "direct_seq_bytes_per_s": warm["dir_seq"],
            "simfs_rand4k_median_ns": warm["mnt_rand"],
            "direct_rand4k_median_ns": warm["dir_rand"],
            "median": {
                "simfs_seq": ms,
                "direct_seq": ds,
                "simfs_rand4k_ns": mr,
                "direct_rand4k_ns": dr,
            },
            "real_cvmfs2": {
                "seq_bytes_per_s": list(REAL_SEQ_BPS),
                "rand4k_ns": list(REAL_RAND_NS),
                "local_disk_rand4k_ns": REAL_DISK_RAND_NS,
            },
            "ratio_seq_vs_real": ms / real_seq,
            "ratio_rand_speed_vs_real": real_rand / mr,
        },
        "cold": {
            key: {
                "http_limit_bytes_per_s": d["http"],
                "simfs_bytes_per_s": d["mount"],
                f"simfs_prefetch{args.prefetch}_bytes_per_s": d["prefetch"],
                "median_bytes_per_s": {
                    "http": med(d["http"]),
                    "simfs": med(d["mount"]),
                    "prefetch": med(d["prefetch"]),
                },
            }
            for key, d in cold.items()
        },
        "command": " ".join(sys.argv),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    # 2: cold.*.median -> median_bytes_per_s; the mounts lived under the temporary directory
    write_json(args.json, result, schema="bench.simfs", version=2, measured=[tempfile.gettempdir()])
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
