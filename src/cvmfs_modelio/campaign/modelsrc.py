"""Where a campaign's models come from: files, or generated *kinds* (a registry).

A declared model (``spec.ModelSpec``) becomes a :class:`ModelInstance` (the files to
publish or load, their total size, family and format) through :func:`materialize`.
Generated kinds are registered with :func:`register_model_kind`; ``synthetic``
(``models.synthetic.make_model``) is built in.  The model corpus (``models make KIND``)
plugs in without an edit here: a module named in :data:`PLUGIN_MODULES` that exists and
defines ``campaign_model_kinds()`` (returning :class:`ModelKind` objects) is registered
on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvmfs_modelio.campaign.experiments import ModelFiles, external_data_files
from cvmfs_modelio.core import units
from cvmfs_modelio.core.errors import UsageError

GiB = 1 << 30
MiB = 1 << 20
LARGE_MODEL_BYTES = 2 * GiB  # above it: the CVMFS maintainers' limit and the cache's quota/2
PLUGIN_MODULES: tuple[str, ...] = ("cvmfs_modelio.models.corpus",)


@dataclass(frozen=True)
class ModelInstance:
    """A model ready to measure: ``entry`` is the file the loader opens; sizes in bytes."""

    name: str
    family: str
    format: str
    entry: Path
    files: tuple[Path, ...]  # entry first, then its companions (external data)
    model_bytes: int

    def as_model_files(self) -> ModelFiles:
        return ModelFiles(self.name, self.entry, self.files)


Checker = Callable[[Mapping[str, Any], str], dict[str, Any]]
Maker = Callable[[Path, Mapping[str, Any]], Path]  # (directory, params) -> entry file


@dataclass(frozen=True)
class ModelKind:
    """A generated model kind: its keys (with defaults), checker, maker and family.

    ``check(params, where)`` returns the params with defaults filled and sizes in bytes
    (UsageError naming ``where`` otherwise); ``make(directory, params)`` writes the model
    into an empty directory and returns the entry file (external data next to it).
    """

    name: str
    keys: Mapping[str, Any]
    check: Checker
    make: Maker
    family: str
    describe: Callable[[Mapping[str, Any]], str]

    def default_name(self, params: Mapping[str, Any]) -> str:
        return self.describe(params)


_KINDS: dict[str, ModelKind] = {}
_plugins_loaded = False


def register_model_kind(kind: ModelKind) -> None:
    """Make ``kind`` usable as ``kind = "<name>"`` in campaign files."""
    _KINDS[kind.name] = kind


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for mod in PLUGIN_MODULES:
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            continue
        hook = getattr(importlib.import_module(mod), "campaign_model_kinds", None)
        if callable(hook):
            for k in hook():
                register_model_kind(k)


def model_kind_names() -> list[str]:
    _load_plugins()
    return sorted(_KINDS)


def model_kind(name: str, where: str) -> ModelKind:
    """The registered kind ``name``; UsageError naming the closest one otherwise."""
    from cvmfs_modelio.campaign.spec import closest

    names = model_kind_names()
    if name not in _KINDS:
        raise UsageError(
            f"{where}: unknown model kind {name!r}{closest(name, names)}; "
            f"known kinds: {', '.join(names)}"
        )
    return _KINDS[name]


# ------------------------------------------------------------------ synthetic


def _check_synthetic(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    size = params.get("size", "32MiB")
    if isinstance(size, bool) or not isinstance(size, (str, int)):
        raise UsageError(f'{where}: size must be a size such as "32MiB", got {size!r}')
    nbytes = units.parse_size(size, f"{where}: size") if isinstance(size, str) else size
    ext = params.get("external_data", False)
    if not isinstance(ext, bool):
        raise UsageError(f"{where}: external_data must be true or false, got {ext!r}")
    width = params.get("width", 1024)
    seed = params.get("seed", 0)
    for key, v in (("width", width), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UsageError(f"{where}: {key} must be a non-negative integer, got {v!r}")
    if width < 1 or width > 16384:
        raise UsageError(f"{where}: width {width} is not in [1, 16384]")
    if nbytes < 4 * width * width:
        raise UsageError(
            f"{where}: size {units.fmt_bytes(nbytes)} is below one {width}x{width} float layer "
            f"({units.fmt_bytes(4 * width * width)})"
        )
    return {"size": int(nbytes), "external_data": ext, "width": int(width), "seed": int(seed)}


def _make_synthetic(directory: Path, params: Mapping[str, Any]) -> Path:
    from cvmfs_modelio.models.synthetic import make_model

    name = "external.onnx" if params["external_data"] else "embedded.onnx"
    m = make_model(
        directory / name,
        int(params["size"]),
        external_data=bool(params["external_data"]),
        width=int(params["width"]),
        seed=int(params["seed"]),
    )
    return m.onnx


def _describe_synthetic(params: Mapping[str, Any]) -> str:
    size = int(params["size"])
    label = f"{size // MiB}MiB" if size % MiB == 0 else f"{size}B"
    return f"synthetic-{'external' if params['external_data'] else 'embedded'}-{label}"


register_model_kind(
    ModelKind(
        name="synthetic",
        keys={"size": "32MiB", "external_data": False, "width": 1024, "seed": 0},
        check=_check_synthetic,
        make=_make_synthetic,
        family="mlp",
        describe=_describe_synthetic,
    )
)


# ------------------------------------------------------------------ instances


def model_format(entry: Path, files: Iterable[Path]) -> str:
    """``onnx`` (weights embedded), ``onnx-external`` (with data files), else the suffix."""
    suffix = entry.suffix.lower().lstrip(".")
    if suffix == "onnx":
        return "onnx-external" if len(list(files)) > 1 else "onnx"
    return suffix or "unknown"


def default_family(kind: str, model_bytes: int) -> str:
    """Family when the campaign names none: the kind's, else ``large`` (> 2 GiB) or ``other``."""
    if kind != "file":
        _load_plugins()
        if kind in _KINDS:
            return _KINDS[kind].family
    return "large" if model_bytes > LARGE_MODEL_BYTES else "other"


def files_of(entry: Path) -> tuple[Path, ...]:
    """``entry`` and the files published with it (an ONNX model's external data)."""
    if entry.suffix.lower() == ".onnx":
        return (entry.resolve(), *external_data_files(entry))
    return (entry.resolve(),)


def materialize(spec: Any, workdir: Path) -> ModelInstance:
    """The files of the declared model ``spec`` (a ``spec.ModelSpec``); generates kinds.

    Generated models are written below ``workdir/<name>/`` (deterministic by their
    parameters, so a resumed run measures the same bytes).
    """
    if spec.kind == "file":
        entry = Path(spec.path)
        if not entry.is_file():
            raise UsageError(f"{entry}: model file not found")
    else:
        kind = model_kind(spec.kind, f"model {spec.name}")
        d = workdir / spec.name
        d.mkdir(parents=True, exist_ok=False)
        entry = kind.make(d, spec.params)
    files = files_of(entry)
    nbytes = sum(os.stat(f).st_size for f in files)
    family = spec.family or default_family(spec.kind, nbytes)
    return ModelInstance(
        spec.name, family, model_format(entry, files), entry.resolve(), files, nbytes
    )
