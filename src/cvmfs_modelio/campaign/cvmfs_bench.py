"""Model loading in the CVMFS client performance benchmark's own format.

The CVMFS team's benchmark (``cvmfs/cvmfs``, ``test/performance-benchmark/client/``) runs
each *command* (a bash script that uses ``/cvmfs`` and exits 0) N times, with
``num_threads`` copies in parallel, in three cache states: **cold** (client cache wiped,
kernel page cache dropped), **warm** (page cache dropped), **hot** (nothing cleared), and
writes one CSV per (command, version, client config, threads) with a column per cache
state and a row per metric: the ``/usr/bin/time`` fields and every ``internal affairs``
counter as ``<repo>_<counter>``, each cell the Python list of its values.

:func:`export` writes, for model files in a repository, one script per model (ONNX
Runtime session creation and first inference: the program is ``cvmfs_modelio.ort.child``,
embedded, so the node needs only python3 with onnxruntime and numpy), the YAML
``avail_cmds`` entries, a complete example configuration, and a manifest.  :func:`run`
executes an export the way the benchmark does, against a real or emulated mount (through
``cvmfs_modelio.mounts``), and writes the same CSV shape (:func:`write_csv`).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.atomicio import write_atomic_bytes
from cvmfs_modelio.core.errors import UsageError

CACHE_COLUMNS = ("cold_cache", "warm_cache", "hot_cache")
CACHE_STATES = ("cold", "warm", "hot")
# The benchmark's /usr/bin/time fields (util_benchmark/benchmark_time.py), in its order.
TIME_METRICS = (
    "user",
    "system",
    "real",
    "cpu",
    "swap",
    "involuntary_swap",
    "voluntary_swap",
    "avg_mem_kb",
    "nmax_resident_set_size_kb",
    "avg_resident_size_kb",
    "page_faults_major",
    "page_faults_minor",
    "socket_received",
    "socket_send",
    "fs_in",
    "fs_out",
    "signals",
)
MANIFEST = "cvmfs-modelio-bench.json"
MANIFEST_SCHEMA = {"name": "cvmfs-modelio.cvmfs-bench-export", "version": 1}
FIRST_SCRIPT_NUMBER = 90  # upstream uses 50-80 for its own workloads
REPO_ROOT_ENV = "CVMFS_BENCH_REPO_ROOT"
PYTHON_ENV = "CVMFS_BENCH_PYTHON"
LOADERS = ("ort", "ort-noprepack")
_NAME_RE = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class BenchCommand:
    """One exported benchmark command: ``script`` relative to the export directory."""

    name: str
    script: str
    repo: str
    model: str  # path inside the repository, without a leading /
    loader: str


def command_name(model: str, taken: set[str]) -> str:
    """``model-<stem>``: lower case, ``-`` only (the benchmark splits file names at ``_``)."""
    stem = Path(model).name.rsplit(".", 1)[0]
    base = "model-" + (_NAME_RE.sub("-", stem.lower()).strip("-") or "x")
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def repo_path(model: str, repo: str) -> str:
    """``/cvmfs/REPO/a/b.onnx`` or ``a/b.onnx`` -> ``a/b.onnx``; UsageError otherwise."""
    prefix = f"/cvmfs/{repo}/"
    if model.startswith("/cvmfs/"):
        if not model.startswith(prefix):
            raise UsageError(f"{model}: not in repository {repo} (expected {prefix}...)")
        rel = model[len(prefix) :]
    elif model.startswith("/"):
        raise UsageError(f"{model}: give a path inside the repository or below {prefix}")
    else:
        rel = model
    parts = Path(rel).parts
    if not parts or ".." in parts or rel.endswith("/"):
        raise UsageError(f"{model}: not a file path inside the repository")
    return "/".join(parts)


def _program() -> str:
    from cvmfs_modelio.ort import child

    return inspect.getsource(child)


def script_text(cmd: BenchCommand) -> str:
    """The bash script of ``cmd`` (exit status 0 when the model answered its first inference)."""
    program = _program()
    delim = "CVMFS_MODELIO_PY"
    assert delim not in program
    flag = " --disable-prepacking" if cmd.loader == "ort-noprepack" else ""
    what = "one inference on zero inputs" + (", weight prepacking disabled" if flag else "")
    return f"""#!/usr/bin/env bash
# {cmd.name}: load an ML model from CVMFS with ONNX Runtime (session creation and
# {what}), as an inference service starts:
#   /cvmfs/{cmd.repo}/{cmd.model}
# Written by `cvmfs-modelio cvmfs-bench export` for the CVMFS client performance benchmark
# (test/performance-benchmark/client); exits 0 when the model answered.  Needs python3
# with onnxruntime and numpy.  ${REPO_ROOT_ENV} replaces /cvmfs/{cmd.repo} (e.g. an
# emulated mount), ${PYTHON_ENV} the interpreter.  Extra arguments (the benchmark's
# thread id) are ignored.
set -euo pipefail
repo_root="${{{REPO_ROOT_ENV}:-/cvmfs/{cmd.repo}}}"
model="$repo_root/{cmd.model}"
if [ ! -e "$model" ]; then
  echo "{cmd.name}: $model: no such file" >&2
  exit 1
fi
exec "${{{PYTHON_ENV}:-python3}}" -{flag} "$model" <<'{delim}'
{program}
{delim}
"""


def export(
    dest: str | os.PathLike[str], repo: str, models: Sequence[str], loader: str = "ort"
) -> list[BenchCommand]:
    """Write scripts, YAML and manifest for ``models`` (paths in ``repo``) into ``dest``."""
    if not repo or "/" in repo or not re.fullmatch(r"[A-Za-z0-9.-]+", repo):
        raise UsageError(f"--repo: {repo!r} is not a repository name (e.g. cms.cern.ch)")
    if loader not in LOADERS:
        raise UsageError(f"--loader: {loader!r} is not one of {', '.join(LOADERS)}")
    if not models:
        raise UsageError("cvmfs-bench export: no models given")
    d = Path(dest)
    if d.exists() and not d.is_dir():
        raise UsageError(f"{d}: exists and is not a directory")
    if (d / "scripts").is_dir() and any((d / "scripts").iterdir()):
        raise UsageError(f"{d}: already holds an export (scripts/); choose an empty directory")
    taken: set[str] = set()
    cmds = []
    for i, m in enumerate(models):
        rel = repo_path(m, repo)
        name = command_name(rel, taken)
        script = f"./scripts/{FIRST_SCRIPT_NUMBER + i}-{name}.sh"
        cmds.append(BenchCommand(name, script, repo, rel, loader))
    try:
        (d / "scripts").mkdir(parents=True, exist_ok=True)
        for c in cmds:
            p = d / c.script
            write_atomic_bytes(p, script_text(c).encode(), fsync=False)
            p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        write_atomic_bytes(d / "avail_cmds.yaml", avail_cmds_yaml(cmds).encode(), fsync=False)
        write_atomic_bytes(d / "config_benchmark.yaml", config_yaml(cmds).encode(), fsync=False)
        doc = {"schema": MANIFEST_SCHEMA, "commands": [c.__dict__ for c in cmds]}
        write_atomic_bytes(d / MANIFEST, (json.dumps(doc, indent=1) + "\n").encode(), fsync=False)
    except OSError as e:
        raise UsageError(f"{d}: cannot write the export: {e.strerror}") from None
    return cmds


def _q(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def avail_cmds_yaml(cmds: Sequence[BenchCommand]) -> str:
    lines = [
        "# avail_cmds entries for the CVMFS client performance benchmark",
        "# (test/performance-benchmark/client), written by `cvmfs-modelio cvmfs-bench export`.",
        "avail_cmds:",
    ]
    for c in cmds:
        lines += [
            f"  {c.name}:",
            f"    command: {_q(c.script)}",
            f"    repos: [{_q(c.repo)}]",
        ]
    return "\n".join(lines) + "\n"


def config_yaml(cmds: Sequence[BenchCommand]) -> str:
    """A complete benchmark configuration running every exported command."""
    names = ", ".join(_q(c.name) for c in cmds)
    return (
        "# CVMFS client performance benchmark configuration for ML model loading\n"
        "# (start_benchmark.py reads it), written by `cvmfs-modelio cvmfs-bench export`.\n"
        "# Set the proxy of your site in avail_client_configs.\n"
        "avail_client_configs:\n"
        "  default:\n"
        "    - 'CVMFS_HTTP_PROXY=DIRECT'\n"
        "    - 'CVMFS_AUTO_UPDATE=NO'\n"
        + avail_cmds_yaml(cmds).split("\n", 2)[2]
        + "\nrun-models:\n"
        "  use_cvmfs: true\n"
        "  cvmfs_save_raw_results: false\n"
        f"  commands: [{names}]\n"
        '  cvmfs_build_dirs: ["rpm"]\n'
        '  client_configs:\n    - ["default"]\n'
        "  num_threads: [1, 16]\n"
        "  repetitions: 5\n"
        '  out_dirname: "./data/models/"\n'
    )


def read_export(d: Path) -> list[BenchCommand]:
    """The commands of an export directory (its manifest)."""
    p = d / MANIFEST
    if not p.is_file():
        raise UsageError(f"{d}: not a cvmfs-bench export (no {MANIFEST})")
    try:
        doc = json.loads(p.read_text())
        if doc.get("schema") != MANIFEST_SCHEMA:
            raise UsageError(f"{p}: schema {doc.get('schema')!r}, expected {MANIFEST_SCHEMA}")
        return [BenchCommand(**c) for c in doc["commands"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UsageError(f"{p}: damaged manifest ({e})") from None


# ------------------------------------------------------------------ running


def time_metrics(out: Any) -> dict[str, float]:
    """The benchmark's ``/usr/bin/time`` fields from one reaped child (``ChildOutcome``).

    ``avg_mem_kb`` and ``avg_resident_size_kb`` are 0, as GNU time reports them on Linux;
    ``cpu`` is (user + system) / real in percent, rounded down as GNU time does.
    """
    real = out.wall_ns / 1e9
    user, system = out.user_ns / 1e9, out.system_ns / 1e9
    return {
        "user": round(user, 6),
        "system": round(system, 6),
        "real": round(real, 6),
        "cpu": float(int(100 * (user + system) / real)) if real > 0 else 0.0,
        "swap": float(out.nswap),
        "involuntary_swap": float(out.involuntary_switches),
        "voluntary_swap": float(out.voluntary_switches),
        "avg_mem_kb": 0.0,
        "nmax_resident_set_size_kb": float(out.max_rss_bytes // 1024),
        "avg_resident_size_kb": 0.0,
        "page_faults_major": float(out.major_faults),
        "page_faults_minor": float(out.minor_faults),
        "socket_received": float(out.msgrcv),
        "socket_send": float(out.msgsnd),
        "fs_in": float(out.inblock),
        "fs_out": float(out.oublock),
        "signals": float(out.signals),
    }


@dataclass
class BenchResult:
    """One command at one thread count: values per metric per cache column."""

    command: BenchCommand
    version: str
    client_config: str
    num_threads: int
    data: dict[str, dict[str, list[float]]]  # cache column -> metric -> values
    csv: Path | None = None


def client_version(mnt: Any) -> str:
    """``user.version`` of a real client; ``cmio-simfs-<version>`` for the emulated one."""
    if mnt.kind == "sim":
        from cvmfs_modelio import __version__

        return f"cmio-simfs-{__version__}"
    try:
        return str(os.getxattr(mnt.root, "user.version").decode().strip())
    except OSError:
        return "unknown"


def run_command(
    export_dir: Path,
    cmd: BenchCommand,
    repo_root: Path,
    *,
    reps: int,
    threads: int,
    client_config: str = "default",
    timeout_s: float = 600.0,
    say: Callable[[str], None] = lambda _m: None,
) -> BenchResult:
    """Run ``cmd`` as the benchmark does: preload once, then cold, warm, hot x ``reps``."""
    from cvmfs_modelio.campaign.childproc import ChildOutcome, run_child
    from cvmfs_modelio.campaign.modelsrc import files_of
    from cvmfs_modelio.mounts import open_mount

    if reps < 1 or threads < 1 or threads > 256:
        raise UsageError(f"--reps {reps} must be >= 1 and --threads {threads} in [1, 256]")
    mnt = open_mount(repo_root)
    try:
        served = mnt.repository()
    except UsageError:
        served = None
    if served is not None and served != cmd.repo:
        raise UsageError(f"{repo_root}: serves repository {served}, the export is for {cmd.repo}")
    model = repo_root / cmd.model
    if not model.is_file():
        raise UsageError(f"{model}: no such file (is {repo_root} repository {cmd.repo}?)")
    files = list(files_of(model))
    env = {**os.environ, REPO_ROOT_ENV: str(repo_root)}
    argv = ["bash", str((export_dir / cmd.script).resolve())]

    def once(n: int) -> list[ChildOutcome]:
        outs: list[ChildOutcome | None] = [None] * n
        errors: list[BaseException] = []

        def one(i: int) -> None:
            try:
                outs[i] = run_child([*argv, str(i)], timeout_s=timeout_s, env=env, cwd=export_dir)
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise errors[0]
        done = [o for o in outs if o is not None]
        for o in done:
            if o.returncode != 0 or o.timed_out:
                raise UsageError(f"{cmd.script}: {o.last_error_line()}")
        return done

    say(f"{cmd.name}: preloading")
    once(threads)
    data: dict[str, dict[str, list[float]]] = {c: {} for c in CACHE_COLUMNS}
    for col, state in zip(CACHE_COLUMNS, CACHE_STATES, strict=True):
        for rep in range(reps):
            say(f"{cmd.name}: {state} {rep + 1}/{reps} ({threads} in parallel)")
            if state == "cold":
                mnt.clear_caches(files)
            elif state == "warm":
                mnt.drop_page_cache(files)
            for o in once(threads):
                for k, v in time_metrics(o).items():
                    data[col].setdefault(k, []).append(v)
            for k, v in mnt.counters().items():
                data[col].setdefault(f"{cmd.repo}_{k}", []).append(float(v))
    return BenchResult(cmd, client_version(mnt), client_config, threads, data)


def csv_name(outdir: Path, r: BenchResult) -> Path:
    """``<command>_<version>_<config>_<threads>_<N>.csv``, N the next free number."""
    base = f"{r.command.name}_{r.version}_{r.client_config}_{r.num_threads}_"
    n = len(list(outdir.glob(base + "[0-9]*.csv")))
    while (outdir / f"{base}{n}.csv").exists():
        n += 1
    return outdir / f"{base}{n}.csv"


def write_csv(outdir: Path, r: BenchResult) -> Path:
    """The benchmark's CSV: index ``labels`` (metrics), one column per cache state, then
    ``command_label``, ``cvmfs_version``, ``num_threads``; written atomically."""
    import pandas as pd

    labels = list(TIME_METRICS) + sorted(k for k in r.data["cold_cache"] if k not in TIME_METRICS)
    frame: dict[str, dict[str, Any]] = {
        col: {k: r.data[col].get(k, []) for k in labels} for col in CACHE_COLUMNS
    }
    frame["command_label"] = dict.fromkeys(labels, r.command.name)
    frame["cvmfs_version"] = dict.fromkeys(labels, r.version)
    frame["num_threads"] = dict.fromkeys(labels, r.num_threads)
    df = pd.DataFrame.from_dict(frame)
    df = df.loc[labels]
    outdir.mkdir(parents=True, exist_ok=True)
    path = csv_name(outdir, r)
    write_atomic_bytes(path, df.to_csv(index_label="labels").encode(), fsync=False)
    r.csv = path
    return path
