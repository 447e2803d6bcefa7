"""``--json PATH`` results: what was measured plus the environment, written atomically."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from cvmfs_modelio.core.atomicio import write_atomic_bytes
from cvmfs_modelio.core.errors import UsageError


def environment(tools: bool = False) -> dict[str, Any]:
    """Kernel, CPU, Python and package versions of this machine (and nginx/squid if ``tools``)."""
    import numpy

    from cvmfs_modelio import __version__

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env: dict[str, Any] = {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "cvmfs_modelio": __version__,
    }
    if tools:
        env["nginx"] = _tool_version(["nginx", "-v"])
        env["squid"] = _tool_version(["squid", "-v"])
    return env


def _tool_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (r.stdout + r.stderr).strip().splitlines()
    return out[0] if out else None


def check_dest(path: str | os.PathLike[str] | None) -> None:
    """UsageError unless ``path`` (an output file; ``-``: stdout) can be created.

    Called before a command does its work, so a bad output path costs nothing and never
    leaves a result half done."""
    if path is None or os.fspath(path) == "-":
        return
    dest = Path(path)
    if dest.is_dir():
        raise UsageError(f"{os.fspath(path)}: is a directory")
    parent = dest.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"{os.fspath(path)}: directory {parent} does not exist")


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomicio.write_atomic_bytes`); a failure is
    a one-line UsageError naming the file."""
    try:
        write_atomic_bytes(path, text.encode("utf-8"), fsync=False)
    except OSError as e:
        raise UsageError(f"{os.fspath(path)}: cannot write: {e.strerror or e}") from None


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` plus ``environment`` as JSON; ``-`` is stdout; atomic otherwise."""
    doc = {**payload, "environment": environment()}
    text = json.dumps(doc, indent=1, sort_keys=True, default=_default) + "\n"
    if os.fspath(path) == "-":
        sys.stdout.write(text)
        return
    write_atomic(path, text)


def _default(o: object) -> Any:
    import numpy

    if isinstance(o, numpy.integer):
        return int(o)
    if isinstance(o, numpy.floating):
        return float(o)
    if isinstance(o, numpy.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
