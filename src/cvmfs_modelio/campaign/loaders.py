"""The ways a campaign loads a model: one child process per measurement, behind a registry.

A :class:`Loader` builds the command line of a fresh child process (nothing of a previous
load survives into the next) and reads the one JSON line the child prints.  Built in:

- ``ort``: ONNX Runtime session creation + first inference (``cvmfs_modelio.ort.child``),
  default options (weight prepacking on);
- ``ort-noprepack``: the same with ``session.disable_prepacking=1``;
- ``probe-seq``, ``probe-mmap-seq``, ``probe-rand``: the native probe engine reading every
  file of the model (sequential 1 MiB reads; every page of a mapping in order; 1000 random
  4 KiB reads per file), ``time_to_first_inference_ns`` = time until the last byte is in.

More loaders plug in with :func:`register_loader`, or from a module named in
:data:`PLUGIN_MODULES` that defines ``campaign_loaders()`` (the ORT loaders of
``ort-load``), without an edit here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cvmfs_modelio.core.errors import UsageError

PLUGIN_MODULES: tuple[str, ...] = ("cvmfs_modelio.ort.loaders",)


@dataclass(frozen=True)
class LoadResult:
    """What the child reported.  Times in ns; ``bytes_read`` -1 when the loader cannot tell."""

    session_ns: int
    first_inference_ns: int
    time_to_first_inference_ns: int
    bytes_read: int = -1
    info: dict[str, Any] = field(default_factory=dict)


class Loader(Protocol):
    """A way to load a model in a child process."""

    @property
    def name(self) -> str:
        """The loader's name in campaign files (``ort``)."""
        ...

    @property
    def description(self) -> str: ...

    def argv(self, entry: Path, files: Sequence[Path]) -> list[str]:
        """The child's command line for the model whose loader-facing file is ``entry``."""
        ...

    def parse(self, stdout: str) -> LoadResult:
        """The measurement from the child's standard output (its last JSON line)."""
        ...


def last_json_line(stdout: str, who: str) -> dict[str, Any]:
    """The last line of ``stdout`` as a JSON object; UsageError naming ``who`` otherwise."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        raise UsageError(f"{who}: the child printed no result")
    try:
        doc = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise UsageError(f"{who}: the child's last line is not JSON: {lines[-1][:80]!r}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{who}: the child's result is not a JSON object")
    return doc


@dataclass(frozen=True)
class OrtLoader:
    """ONNX Runtime in ``cvmfs_modelio.ort.child``; ``prepacking`` False disables it."""

    name: str
    description: str
    prepacking: bool = True

    def argv(self, entry: Path, files: Sequence[Path]) -> list[str]:
        argv = [sys.executable, "-m", "cvmfs_modelio.ort.child"]
        if not self.prepacking:
            argv.append("--disable-prepacking")
        return [*argv, str(entry)]

    def parse(self, stdout: str) -> LoadResult:
        doc = last_json_line(stdout, f"loader {self.name}")
        s, f = int(doc["session_ns"]), int(doc["first_inference_ns"])
        info = {"onnxruntime": doc.get("onnxruntime"), "prepacking": doc.get("prepacking")}
        return LoadResult(s, f, s + f, -1, info)


@dataclass(frozen=True)
class ProbeLoader:
    """The native probe engine over every file (``campaign.probe_child``)."""

    name: str
    description: str
    pattern: str
    block: int
    count: int = 0

    def argv(self, entry: Path, files: Sequence[Path]) -> list[str]:
        argv = [sys.executable, "-m", "cvmfs_modelio.campaign.probe_child", self.pattern]
        return [*argv, str(self.block), str(self.count), *map(str, files)]

    def parse(self, stdout: str) -> LoadResult:
        doc = last_json_line(stdout, f"loader {self.name}")
        t = int(doc["elapsed_ns"])
        return LoadResult(0, 0, t, int(doc["bytes"]), {"ops": doc.get("ops")})


_LOADERS: dict[str, Loader] = {}
_plugins_loaded = False


def register_loader(loader: Loader) -> None:
    """Make ``loader`` usable as ``loader = ["<name>"]`` in campaign files."""
    _LOADERS[loader.name] = loader


for _l in (
    OrtLoader("ort", "ONNX Runtime session + first inference, default options"),
    OrtLoader("ort-noprepack", "ONNX Runtime with session.disable_prepacking=1", False),
    ProbeLoader("probe-seq", "sequential 1 MiB read() of every file", "seq", 1 << 20),
    ProbeLoader(
        "probe-mmap-seq", "every page of a mapping of each file, in order", "mmap-seq", 4096
    ),
    ProbeLoader("probe-rand", "1000 random 4 KiB pread() per file", "rand", 4096, 1000),
):
    register_loader(_l)


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
        hook = getattr(importlib.import_module(mod), "campaign_loaders", None)
        if callable(hook):
            for loader in hook():
                register_loader(loader)


def loader_names() -> list[str]:
    _load_plugins()
    return sorted(_LOADERS)


def get_loader(name: str) -> Loader:
    """The registered loader ``name``; UsageError naming the closest one otherwise."""
    from cvmfs_modelio.campaign.spec import closest

    names = loader_names()
    if name not in _LOADERS:
        raise UsageError(
            f"unknown loader {name!r}{closest(name, names)}; known: {', '.join(names)}"
        )
    return _LOADERS[name]
