"""Declared campaigns: the TOML file ``cvmfs-modelio run`` executes, parsed and checked.

A campaign file names the models, the target they are loaded from and a matrix of
conditions; every combination of the matrix, for every model, is one *cell*
(``campaign.cells``), measured ``reps`` times::

    [campaign]
    name = "small"            # required; names the results store's campaign
    reps = 3                  # repetitions of every cell (default 3)
    executor = "local"        # campaign.executors (default local)

    [[models]]                # a file (relative to this campaign file) ...
    path = "models/m.onnx"
    family = "hep-tagger"     # optional (default: from kind and size)

    [[models]]                # ... or a generated model (campaign.modelsrc kinds)
    kind = "synthetic"
    size = "32MiB"
    external_data = true

    [target]
    kind = "emulated"         # emulated | cvmfs (path = "/cvmfs/repo/dir") | local

    [matrix]                  # every key takes a list (or one value)
    chunking = ["4MiB/8MiB/16MiB", "whole"]
    rtt_ms = [0, 10]
    bandwidth = ["100MiB"]    # bytes/s, 0: unlimited
    prefetch = [0]            # emulated client --prefetch N
    parallel = [16]           # emulated client --parallel N (HTTP connections)
    client_profile = ["cvmfs-2.12"]
    cache = ["cold", "warm", "hot"]
    loader = ["ort"]          # campaign.loaders

    [batch]                   # only for executor = "slurm" / "htcondor" (all optional)
    tasks = 4                 # array tasks (default: one per series, at most 64)
    max_parallel = 0          # tasks running at once (sbatch --array=...%N; 0: no limit)
    partition = ""            # sbatch --partition
    time_limit_min = 0        # sbatch --time / condor allowed_job_duration (0: none)
    submit_args = []          # extra sbatch options / submit description lines
    poll_s = 2.0              # how often the queue is asked whether the tasks ended

Every problem is a one-line :class:`UsageError` naming the file, the table and the key;
an unknown key names the closest valid one (``difflib``).  Sizes in bytes, RTT in ms as
declared (the cells carry ns).
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cvmfs_modelio.campaign.experiments import ChunkConfig
from cvmfs_modelio.chunks.layouts import parse_min_avg_max
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TARGETS = ("emulated", "cvmfs", "local")
CACHE_STATES = ("cold", "warm", "hot")  # the CVMFS benchmark's three, in its order
CLIENT_PROFILES = ("cvmfs-2.12", "fast")
DEFAULT_CLIENT_PROFILE = "cvmfs-2.12"
SERVERS = ("builtin", "nginx")

_TOP_KEYS = ("campaign", "models", "target", "matrix", "batch")
_BATCH_KEYS = ("tasks", "max_parallel", "partition", "time_limit_min", "submit_args", "poll_s")
_CAMPAIGN_KEYS = ("name", "description", "reps", "executor", "timeout_s")
_TARGET_KEYS = ("kind", "path", "server")
_MATRIX_KEYS = (
    "chunking",
    "rtt_ms",
    "bandwidth",
    "prefetch",
    "parallel",
    "client_profile",
    "cache",
    "loader",
)
_MODEL_COMMON_KEYS = ("name", "family", "path", "kind")


@dataclass(frozen=True)
class ModelSpec:
    """One declared model: a file (``kind == "file"``, ``path``) or a generated kind.

    ``params`` are the kind's own keys as declared (sizes already in bytes); ``family``
    is None when the campaign leaves it to be derived (``campaign.modelsrc``).
    """

    name: str
    kind: str
    path: Path | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    family: str | None = None

    def source(self) -> dict[str, Any]:
        """What identifies this model's bytes (part of every cell key)."""
        if self.kind == "file":
            return {"kind": "file", "path": str(self.path)}
        return {"kind": self.kind, **dict(sorted(self.params.items()))}


@dataclass(frozen=True)
class TargetSpec:
    """Where models are loaded from: ``emulated`` stack, a real ``cvmfs`` path, ``local``."""

    kind: str = "emulated"
    path: Path | None = None  # cvmfs: the repository directory models are relative to
    server: str = "builtin"  # emulated: the stratum's HTTP server


@dataclass(frozen=True)
class Matrix:
    """The conditions every model is measured under (each tuple is one axis)."""

    chunking: tuple[ChunkConfig, ...]
    rtt_ms: tuple[float, ...]
    bandwidth: tuple[int, ...]  # bytes/s, 0: unlimited
    prefetch: tuple[int, ...]
    parallel: tuple[int, ...]
    client_profile: tuple[str, ...]
    cache: tuple[str, ...]
    loader: tuple[str, ...]


@dataclass(frozen=True)
class BatchSpec:
    """How a batch executor splits and submits the cells (not part of what is measured)."""

    tasks: int = 0  # 0: one per series, at most 64
    max_parallel: int = 0
    partition: str = ""
    time_limit_min: int = 0
    submit_args: tuple[str, ...] = ()
    poll_s: float = 2.0


@dataclass(frozen=True)
class CampaignSpec:
    """A parsed campaign file.  ``source`` is the file it came from (None if from text)."""

    name: str
    models: tuple[ModelSpec, ...]
    target: TargetSpec
    matrix: Matrix
    reps: int = 3
    executor: str = "local"
    description: str = ""
    timeout_s: float = 600.0
    source: Path | None = None
    batch: BatchSpec = field(default_factory=BatchSpec)

    def canonical(self) -> dict[str, Any]:
        """JSON-ready form (what ``store.json`` records as the campaign)."""
        m = self.matrix
        return {
            "name": self.name,
            "description": self.description,
            "source": str(self.source) if self.source else None,
            "reps": self.reps,
            "executor": self.executor,
            "timeout_s": self.timeout_s,
            "models": [{"name": s.name, "family": s.family, **s.source()} for s in self.models],
            "target": {
                "kind": self.target.kind,
                "path": str(self.target.path) if self.target.path else None,
                "server": self.target.server,
            },
            "matrix": {
                "chunking": [c.label for c in m.chunking],
                "rtt_ms": list(m.rtt_ms),
                "bandwidth_bytes_per_s": list(m.bandwidth),
                "prefetch": list(m.prefetch),
                "parallel": list(m.parallel),
                "client_profile": list(m.client_profile),
                "cache": list(m.cache),
                "loader": list(m.loader),
            },
        }


# ------------------------------------------------------------------ helpers


def closest(word: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid word, or ``""`` if none is close."""
    hits = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {hits[0]!r}?)" if hits else ""


def check_keys(table: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    """UsageError for the first key of ``table`` that is not in ``valid``."""
    for key in table:
        if key not in valid:
            raise UsageError(
                f"{where}: unknown key {key!r}{closest(key, valid)}; valid keys: {', '.join(valid)}"
            )


T = TypeVar("T")


def _typed(value: Any, types: tuple[type, ...], what: str, where: str) -> Any:
    # bool is an int in Python; a TOML `true` must not pass as a number.
    if isinstance(value, bool) and bool not in types:
        raise UsageError(f"{where}: {what} must be {_type_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise UsageError(f"{where}: {what} must be {_type_names(types)}, got {value!r}")
    return value


def _type_names(types: tuple[type, ...]) -> str:
    if set(types) == {int, float}:
        return "a number"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _axis(
    table: Mapping[str, Any],
    key: str,
    default: Sequence[Any],
    convert: Callable[[Any, str], T],
    where: str,
) -> tuple[T, ...]:
    raw = table.get(key, list(default))
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise UsageError(f"{where}: {key} is an empty list (leave it out for the default)")
    out = tuple(convert(v, f"{where}: {key}") for v in items)
    if len(set(out)) != len(out):
        raise UsageError(f"{where}: {key} names a value twice ({raw!r})")
    return out


def _chunking(value: Any, where: str) -> ChunkConfig:
    text = _typed(value, (str,), "each entry", where)
    if text in ("whole", "unchunked"):
        return ChunkConfig.whole()
    if text.count("/") != 2:
        raise UsageError(f"{where}: {text!r} is not MIN/AVG/MAX or whole")
    try:
        return ChunkConfig.chunked(*parse_min_avg_max(text, where))
    except UsageError as e:
        msg = str(e)
        raise UsageError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _rtt(value: Any, where: str) -> float:
    v = float(_typed(value, (int, float), "each entry", where))
    if not math.isfinite(v) or v < 0 or v > 10_000:
        raise UsageError(f"{where}: {value!r} ms is not in [0, 10000]")
    return v


def _size(value: Any, where: str) -> int:
    if isinstance(value, str):
        return units.parse_size(value, where)
    v = _typed(value, (int,), "each entry", where)
    if v < 0:
        raise UsageError(f"{where}: {v} is negative")
    return int(v)


def _int_in(lo: int, hi: int) -> Callable[[Any, str], int]:
    def conv(value: Any, where: str) -> int:
        v = _typed(value, (int,), "each entry", where)
        if not lo <= v <= hi:
            raise UsageError(f"{where}: {v} is not in [{lo}, {hi}]")
        return int(v)

    return conv


def _choice(valid: Sequence[str]) -> Callable[[Any, str], str]:
    def conv(value: Any, where: str) -> str:
        v = _typed(value, (str,), "each entry", where)
        if v not in valid:
            raise UsageError(
                f"{where}: unknown value {v!r}{closest(v, valid)}; valid: {', '.join(valid)}"
            )
        return str(v)

    return conv


# ------------------------------------------------------------------ parsing


def load_campaign(path: str | os.PathLike[str]) -> CampaignSpec:
    """Read and check a campaign file; UsageError (one line naming the file) on any problem."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{p}: no such campaign file") from None
    except IsADirectoryError:
        raise UsageError(f"{p}: is a directory, not a campaign file") from None
    except OSError as e:
        raise UsageError(f"{p}: cannot read: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{p}: not UTF-8 text (byte {e.start})") from None
    return parse_campaign(text, p)


def parse_campaign(text: str, source: Path | None = None) -> CampaignSpec:
    """Parse campaign TOML ``text``; relative model paths are relative to ``source``'s folder."""
    name = str(source) if source else "<campaign>"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{name}: malformed TOML: {e}") from None
    check_keys(doc, _TOP_KEYS, name)
    base = source.resolve().parent if source else Path.cwd()

    camp = _table(doc, "campaign", name, required=True)
    check_keys(camp, _CAMPAIGN_KEYS, f"{name}: [campaign]")
    where = f"{name}: [campaign]"
    if "name" not in camp:
        raise UsageError(f"{where}: name is missing (it names the campaign in its results)")
    cname = _typed(camp["name"], (str,), "name", where)
    if not cname.strip() or any(c in cname for c in "/\\\n"):
        raise UsageError(f"{where}: name {cname!r} must be non-empty, one line, without '/'")
    reps = _typed(camp.get("reps", 3), (int,), "reps", where)
    if not 1 <= reps <= 10_000:
        raise UsageError(f"{where}: reps {reps} is not in [1, 10000]")
    executor = _typed(camp.get("executor", "local"), (str,), "executor", where)
    description = _typed(camp.get("description", ""), (str,), "description", where)
    timeout_s = float(_typed(camp.get("timeout_s", 600.0), (int, float), "timeout_s", where))
    if not 0 < timeout_s <= 86_400:
        raise UsageError(f"{where}: timeout_s {timeout_s} is not in (0, 86400]")

    target = _target(_table(doc, "target", name), name, base)
    matrix = _matrix(_table(doc, "matrix", name), name, target)
    models = _models(doc.get("models"), name, base, target)
    batch = _batch(_table(doc, "batch", name), name)
    return CampaignSpec(
        name=cname,
        models=models,
        target=target,
        matrix=matrix,
        reps=reps,
        executor=executor,
        description=description,
        timeout_s=timeout_s,
        source=source.resolve() if source else None,
        batch=batch,
    )


def _batch(table: dict[str, Any], name: str) -> BatchSpec:
    where = f"{name}: [batch]"
    check_keys(table, _BATCH_KEYS, where)
    tasks = _typed(table.get("tasks", 0), (int,), "tasks", where)
    if not 0 <= tasks <= 10_000:
        raise UsageError(f"{where}: tasks {tasks} is not in [0, 10000] (0: one per series)")
    par = _typed(table.get("max_parallel", 0), (int,), "max_parallel", where)
    if not 0 <= par <= 10_000:
        raise UsageError(f"{where}: max_parallel {par} is not in [0, 10000]")
    minutes = _typed(table.get("time_limit_min", 0), (int,), "time_limit_min", where)
    if not 0 <= minutes <= 525_600:
        raise UsageError(f"{where}: time_limit_min {minutes} is not in [0, 525600]")
    partition = _typed(table.get("partition", ""), (str,), "partition", where)
    if any(c.isspace() for c in partition):
        raise UsageError(f"{where}: partition {partition!r} must not contain white space")
    args = _typed(table.get("submit_args", []), (list,), "submit_args", where)
    for a in args:
        if not isinstance(a, str) or "\n" in a:
            raise UsageError(f"{where}: submit_args must be a list of one-line strings, got {a!r}")
    poll = float(_typed(table.get("poll_s", 2.0), (int, float), "poll_s", where))
    if not 0.1 <= poll <= 600:
        raise UsageError(f"{where}: poll_s {poll} is not in [0.1, 600]")
    return BatchSpec(tasks, par, partition, minutes, tuple(args), poll)


def _table(doc: Mapping[str, Any], key: str, name: str, required: bool = False) -> dict[str, Any]:
    if key not in doc:
        if required:
            raise UsageError(f"{name}: no [{key}] table")
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise UsageError(f"{name}: {key} must be a table ([{key}]), got {type(value).__name__}")
    return value


def _target(table: dict[str, Any], name: str, base: Path) -> TargetSpec:
    where = f"{name}: [target]"
    check_keys(table, _TARGET_KEYS, where)
    kind = _choice(TARGETS)(table.get("kind", "emulated"), f"{where} kind")
    server = _choice(SERVERS)(table.get("server", "builtin"), f"{where} server")
    path: Path | None = None
    if "path" in table:
        raw = _typed(table["path"], (str,), "path", where)
        path = (base / raw).resolve() if not os.path.isabs(raw) else Path(raw)
    if kind == "cvmfs":
        if path is None:
            raise UsageError(f"{where}: kind cvmfs needs path (a directory on a /cvmfs mount)")
        if not path.is_dir():
            raise UsageError(f"{where}: path {path} is not a directory")
    elif path is not None:
        raise UsageError(f"{where}: path applies to kind cvmfs only")
    if kind != "emulated" and "server" in table:
        raise UsageError(f"{where}: server applies to kind emulated only")
    return TargetSpec(kind, path, server)


def _matrix(table: dict[str, Any], name: str, target: TargetSpec) -> Matrix:
    from cvmfs_modelio.campaign.loaders import loader_names

    where = f"{name}: [matrix]"
    check_keys(table, _MATRIX_KEYS, where)
    emulated = target.kind == "emulated"
    if not emulated:
        # A real repository has its own layout and network; the client is the real one.
        for key in ("chunking", "rtt_ms", "bandwidth", "prefetch", "parallel", "client_profile"):
            if key in table:
                raise UsageError(
                    f"{where}: {key} applies to the emulated target only "
                    f"(target kind {target.kind} is measured as it is)"
                )
    return Matrix(
        chunking=_axis(table, "chunking", ["4MiB/8MiB/16MiB"], _chunking, where)
        if emulated
        else (ChunkConfig("repository", False),),
        rtt_ms=_axis(table, "rtt_ms", [10.0], _rtt, where) if emulated else (-1.0,),
        bandwidth=_axis(table, "bandwidth", ["100MiB"], _size, where) if emulated else (-1,),
        prefetch=_axis(table, "prefetch", [0], _int_in(0, 1024), where) if emulated else (0,),
        parallel=_axis(table, "parallel", [16], _int_in(1, 1024), where) if emulated else (0,),
        client_profile=_axis(
            table, "client_profile", [DEFAULT_CLIENT_PROFILE], _choice(CLIENT_PROFILES), where
        )
        if emulated
        else (_measured_client(target, f"{name}: [target]"),),
        cache=_axis(table, "cache", list(CACHE_STATES), _choice(CACHE_STATES), where),
        loader=_axis(table, "loader", ["ort"], _choice(loader_names()), where),
    )


def _measured_client(target: TargetSpec, where: str) -> str:
    """The client a non-emulated target is measured with: ``real`` cvmfs2, ``none`` (local
    disk), or the emulated client's profile when a "repository" path is an emulated mount."""
    if target.kind != "cvmfs" or target.path is None:
        return "none"
    from cvmfs_modelio.mounts import SIM, find_mount
    from cvmfs_modelio.sim.mount import read_client_profile

    try:
        info = find_mount(target.path)
    except UsageError:
        raise UsageError(f"{where}: path {target.path} is not on a CVMFS mount") from None
    return read_client_profile(info.mountpoint) if info.kind == SIM else "real"


def _models(raw: Any, name: str, base: Path, target: TargetSpec) -> tuple[ModelSpec, ...]:
    from cvmfs_modelio.campaign.modelsrc import model_kind

    if raw is None:
        raise UsageError(f"{name}: no [[models]] (declare at least one model)")
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise UsageError(f"{name}: models must be an array of tables ([[models]])")
    if not raw:
        raise UsageError(f"{name}: [[models]] is empty")
    out: list[ModelSpec] = []
    for i, table in enumerate(raw, 1):
        where = f"{name}: [[models]] #{i}"
        if ("path" in table) == ("kind" in table):
            raise UsageError(f"{where}: give either path (a model file) or kind (generated)")
        family = table.get("family")
        if family is not None:
            family = _typed(family, (str,), "family", where)
        mname = table.get("name")
        if mname is not None:
            mname = _typed(mname, (str,), "name", where)
            if not mname or any(c in mname for c in "/\\\n "):
                raise UsageError(f"{where}: name {mname!r} must be one word without '/'")
        if "path" in table:
            check_keys(table, ("name", "family", "path"), where)
            rel = _typed(table["path"], (str,), "path", where)
            root = target.path if target.kind == "cvmfs" and target.path else base
            path = Path(rel) if os.path.isabs(rel) else root / rel
            if not path.is_file():
                raise UsageError(f"{where}: path {path} is not a file")
            # "" marks a name to derive once all models are known (stems often collide)
            out.append(ModelSpec(mname or "", "file", path.resolve(), {}, family))
            continue
        kind_name = _typed(table["kind"], (str,), "kind", where)
        kind = model_kind(kind_name, where)
        if target.kind == "cvmfs":
            raise UsageError(f"{where}: generated models cannot be loaded from a real repository")
        params = {k: v for k, v in table.items() if k not in _MODEL_COMMON_KEYS}
        check_keys(params, tuple(kind.keys), f"{where} (kind {kind_name})")
        checked = kind.check(params, where)
        out.append(ModelSpec(mname or kind.default_name(checked), kind_name, None, checked, family))
    out = _derive_file_names(out)
    names = [m.name for m in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"{name}: two models are named {dup[0]!r} (set name = ... on one)")
    return tuple(out)


def _derive_file_names(models: list[ModelSpec]) -> list[ModelSpec]:
    """Unnamed file models get their stem; colliding ones are prefixed by parent folders."""
    depth = {i: 0 for i, m in enumerate(models) if not m.name}

    def derived(i: int) -> str:
        p = models[i].path
        assert p is not None
        parts = p.parent.parts[len(p.parent.parts) - depth[i] :] if depth[i] else ()
        return "-".join([*parts, p.stem])

    for _ in range(8):
        names = [m.name or derived(i) for i, m in enumerate(models)]
        clash = {n for n in names if names.count(n) > 1}
        grow = [i for i in depth if names[i] in clash]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    return [
        m if m.name else ModelSpec(derived(i), m.kind, m.path, m.params, m.family)
        for i, m in enumerate(models)
    ]
