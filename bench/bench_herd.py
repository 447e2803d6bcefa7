"""Herd curves (issue 12, item 6): N clients load one model at once behind one squid.

Models: all-MiniLM-L6-v2 as ONNX (``models make minilm-onnx``, 87 MiB, weights embedded)
and a 256 MiB synthetic model with external data.  Stack: one stratum (builtin server)
behind the WAN emulator at 10 ms RTT and a 100 MiB/s uplink shared by all connections,
one squid (collapsed forwarding on, cold) in front, N = 1, 4, 16, 64 clients
(``cvmfs_modelio.herd.run``), chunked 4/8/16 MiB (CVMFS's default) and unchunked.  N above
what the measured per-client memory allows on this machine is refused, and reported so.
For MiniLM at N = 16 also with collapsed forwarding off and with a warm squid (the
stratum's load is what changes).

Times to first inference on this machine are bounded by CPU: N ONNX Runtime sessions share
2 cores (column ``cpu/client``); the stratum/squid counts do not depend on it.  The load
average before and after each herd is recorded (other work on the machine adds noise).

Prints one table per model and saves ``bench/results/herd.json``.  ``--quick``: MiniLM only,
N = 1 and 4 (~2 min).

    python bench/bench_herd.py [--quick] [--clients 1,4,16,64] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.experiments import ChunkConfig, model_from_path
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes
from cvmfs_modelio.herd.report import HEADER, table_rows
from cvmfs_modelio.herd.run import ClientMemory, HerdParams, HerdRow, check_clients, run_herd

MiB = 1 << 20
RESULTS = Path(__file__).resolve().parent / "results" / "herd.json"
CONFIGS = (ChunkConfig.chunked(4 * MiB, 8 * MiB, 16 * MiB), ChunkConfig.whole())


def _progress(text: str) -> None:
    sys.stderr.write(f"  {text}\n")


def _models(tmp: Path, quick: bool) -> list[Path]:
    from cvmfs_modelio.models import corpus
    from cvmfs_modelio.models.synthetic import make_model

    for d in ("minilm", "syn"):
        (tmp / d).mkdir()
    out = [corpus.make("minilm-onnx", tmp / "minilm" / "minilm.onnx").files[0]]
    if not quick:
        syn = make_model(tmp / "syn" / "synthetic-256MiB.onnx", 256 * MiB, external_data=True)
        out.append(syn.onnx)
    return out


def _one(
    model: Path, params: HerdParams, wd: Path, memory: ClientMemory | None
) -> tuple[list[HerdRow], ClientMemory | None, str]:
    try:
        rep = run_herd(model_from_path(model), params, wd, progress=_progress, memory=memory)
    except UsageError as e:
        if str(e).startswith(f"--clients {params.clients}: one client needs"):
            return [], memory, str(e)  # the machine cannot hold N: reported, not measured
        raise
    return rep.rows, rep.memory, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MiniLM only, N = 1 and 4")
    ap.add_argument("--clients", default=None, help="comma-separated N (default 1,4,16,64)")
    ap.add_argument("--json", default=str(RESULTS), help="result file")
    args = ap.parse_args(argv)
    ns = [int(x) for x in (args.clients or ("1,4" if args.quick else "1,4,16,64")).split(",")]
    runs: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-herd-") as tmps:
        tmp = Path(tmps)
        for model in _models(tmp, args.quick):
            name = model.stem
            size = sum(os.stat(f).st_size for f in model_from_path(model).files)
            print(f"\n{name} ({fmt_bytes(size)}): 10 ms RTT, 100 MiB/s uplink, squid")
            memory: ClientMemory | None = None
            variants: list[tuple[str, dict[str, Any]]] = [
                (f"N={n} cold, collapsed on", {"clients": n}) for n in ns
            ]
            if not args.quick and name == "minilm" and 16 in ns:
                variants += [
                    ("N=16 cold, collapsed off", {"clients": 16, "collapsed_forwarding": False}),
                    ("N=16 warm squid", {"clients": 16, "squid_state": "warm"}),
                ]
            table: list[list[str]] = []
            for label, kw in variants:
                params = HerdParams(configs=CONFIGS, rtt_ms=10.0, bandwidth=100 * MiB, **kw)
                if memory is not None:
                    try:
                        check_clients(params.clients, memory)
                    except UsageError as e:
                        refused.append({"model": name, "variant": label, "reason": str(e)})
                        print(f"  {label}: refused: {e}")
                        continue
                wd = tmp / "wd"
                wd.mkdir()
                sys.stderr.write(f"{name} {label}\n")
                rows, memory, why = _one(model, params, wd, memory)
                wd.rmdir()
                if why:
                    refused.append({"model": name, "variant": label, "reason": why})
                    print(f"  {label}: refused: {why}")
                    continue
                for r in rows:
                    rec = dataclasses.asdict(r)
                    runs.append(
                        {
                            "model": name,
                            "model_bytes": size,
                            "variant": label,
                            "proxy": params.proxy,
                            "collapsed_forwarding": params.collapsed_forwarding,
                            "squid_state": params.squid_state,
                            **rec,
                        }
                    )
                    table.append([label, *table_rows([r])[0]])
            print(format_table(["variant", *HEADER], table))
            if memory is not None:
                print(
                    f"  per client {fmt_bytes(memory.per_client_bytes)} (ORT "
                    f"{fmt_bytes(memory.load_rss_bytes)} + cmio-simfs "
                    f"{fmt_bytes(memory.client_hwm_bytes)}); at most {memory.max_clients} "
                    f"clients in {fmt_bytes(memory.available_bytes)} available"
                )
    elapsed = time.monotonic() - t0
    print(f"\n{elapsed:.0f} s; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    write_json(
        args.json,
        {
            "rtt_ns": 10_000_000,
            "bandwidth_bytes_per_s": 100 * MiB,
            "configs": [c.label for c in CONFIGS],
            "clients": ns,
            "runs": runs,
            "refused": refused,
            "elapsed_s": elapsed,
            "cpu_count": os.cpu_count(),
        },
        schema="bench.herd",
        version=1,
    )
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
