"""``cvmfs-modelio sweep FILES/TRACES --avg LO..HI``: what-if xor32 configurations."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from cvmfs_modelio.chunks.analysis import requests_from_events
from cvmfs_modelio.chunks.sweep import CorpusFile, avg_range, config_grid, run_sweep
from cvmfs_modelio.cli._chunkopts import (
    add_fetch_model_args,
    fetch_model,
    is_trace,
    load_trace,
    read_files,
)
from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.core.jsonout import check_dest, write_json
from cvmfs_modelio.core.tables import format_table
from cvmfs_modelio.core.units import fmt_bytes, fmt_ns, parse_size


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("sweep", help="what-if xor32 chunk sizes over files and traces")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="FILE|TRACE",
        help="model files and event files; a trace's read files join the corpus with its reads",
    )
    p.add_argument(
        "--avg",
        default="256KiB..64MiB",
        metavar="SIZES",
        help="average chunk sizes in bytes: LO..HI (the powers of two between) or a comma "
        "list (default 256KiB..64MiB)",
    )
    p.add_argument(
        "--min-ratio", default="0.5", metavar="R", help="min = avg * R; a comma list of R"
    )
    p.add_argument("--max-ratio", default="2", metavar="R", help="max = avg * R; a comma list of R")
    add_fetch_model_args(p)
    p.add_argument("--json", metavar="PATH", help="write every row as JSON ('-': stdout)")
    p.set_defaults(func=run)


def parse_avgs(text: str) -> list[int]:
    if ".." in text:
        lo, _, hi = text.partition("..")
        return avg_range(parse_size(lo, "--avg"), parse_size(hi, "--avg"))
    return [parse_size(t, "--avg") for t in text.split(",")]


def parse_ratios(text: str, what: str) -> list[float]:
    out = []
    for t in text.split(","):
        try:
            v = float(t)
        except ValueError:
            raise UsageError(f"{what}: cannot parse ratio {t!r}") from None
        if not 0 < v < 1e6:
            raise UsageError(f"{what}: ratio must be positive, got {t!r}")
        out.append(v)
    return out


def build_corpus(paths: list[str]) -> tuple[list[CorpusFile], list[str]]:
    """Corpus entries (traced files first) and notes about what was skipped or assumed.

    A trace taken without ``--match`` holds every file the program read (Python modules,
    shared libraries, ONNX Runtime's cache database, ...): a traced file that is gone or
    changed size since tracing cannot be analysed and is skipped with a note, so it never
    sinks the sweep of the others.
    """
    traced: dict[str, CorpusFile] = {}
    plain: list[str] = []
    notes: list[str] = []
    for p in paths:
        if not is_trace(p):
            plain.append(p)
            continue
        log = load_trace(p)
        entries = read_files(log)
        if not entries:
            notes.append(f"{p}: no reads in this trace")
        for e in entries:
            if not os.path.isfile(e.path):
                notes.append(f"{p}: {e.path} is not here to chunk; skipped")
                continue
            f = CorpusFile.open(e.path)
            if e.size > 0 and e.size != f.size:
                notes.append(f"{p}: {e.path} was {e.size} bytes when traced, now {f.size}; skipped")
                continue
            req = requests_from_events(log.events, f.size, e.file_id)
            traced[os.path.realpath(e.path)] = CorpusFile.open(e.path, req)
    corpus = list(traced.values())
    for p in plain:
        if os.path.realpath(p) in traced:
            continue
        if not os.path.isfile(p):
            raise UsageError(f"{p}: not a regular file")
        corpus.append(CorpusFile.open(p))
        notes.append(f"{p}: no trace given, whole-file load assumed")
    return corpus, notes


def run(args: argparse.Namespace) -> int:
    model = fetch_model(args)
    check_dest(args.json)
    configs = config_grid(
        parse_avgs(args.avg),
        parse_ratios(args.min_ratio, "--min-ratio"),
        parse_ratios(args.max_ratio, "--max-ratio"),
    )
    corpus, notes = build_corpus(args.paths)
    if not corpus:
        for n in notes:
            print(f"note: {n}")
        raise UsageError("sweep: no file left to analyse (see the notes above)")
    total = sum(f.size for f in corpus)
    print(f"corpus: {len(corpus)} file(s), {fmt_bytes(total)}; {len(configs)} configurations")
    for n in notes:
        print(f"note: {n}")
    t0 = time.perf_counter()
    smallest = min(c.avg_size for c in configs)
    for f in corpus:
        f.scan(smallest)
    t1 = time.perf_counter()
    rows = run_sweep(corpus, configs, model)
    t2 = time.perf_counter()
    table = []
    for r in rows:
        table.append(
            [
                r.config.label(),
                str(r.n_chunks),
                str(r.n_chunked_files),
                fmt_bytes(r.fetched_bytes),
                f"{r.amplification:.3f}",
                str(r.n_fetches),
                fmt_ns(r.fetch_time_ns),
            ]
        )
    requested = rows[0].requested_bytes if rows else 0
    print(f"distinct bytes requested: {fmt_bytes(requested)} ({requested})")
    print(
        format_table(
            [
                "min/avg/max",
                "chunks",
                "chunked files",
                "bytes fetched",
                "fetched/requested",
                "fetches",
                "est. fetch time",
            ],
            table,
        )
    )
    rate = len(configs) / (t2 - t1) if t2 > t1 else float("inf")
    print(
        f"hash pass {t1 - t0:.2f} s (one per file, avg {fmt_bytes(smallest)}); "
        f"{len(configs)} configurations in {t2 - t1:.3f} s ({rate:.0f}/s)"
    )
    if args.json:
        write_json(
            args.json,
            {
                "command": "sweep",
                "files": [
                    {"path": f.path, "size_bytes": f.size, "traced": f.traced} for f in corpus
                ],
                "notes": notes,
                "model": {
                    "rtt_ns": model.rtt_ns,
                    "bandwidth_bytes_per_s": model.bandwidth,
                    "in_flight": model.in_flight,
                },
                "hash_ns": round((t1 - t0) * 1e9),
                "sweep_ns": round((t2 - t1) * 1e9),
                "rows": [r.to_dict() for r in rows],
            },
            schema="sweep",
            # 2: units in keys (size_bytes, min_bytes, bandwidth_bytes_per_s, hash_ns, ...)
            version=2,
            measured=[f.path for f in corpus],
        )
    return 0
