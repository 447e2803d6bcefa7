"""``--json PATH`` results: what was measured plus the environment, written atomically."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def environment() -> dict[str, Any]:
    """Kernel, CPU, Python and package versions of this machine."""
    import numpy

    from cvmfs_modelio import __version__

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "cvmfs_modelio": __version__,
    }


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` plus ``environment`` as JSON; ``-`` is stdout; atomic otherwise."""
    doc = {**payload, "environment": environment()}
    text = json.dumps(doc, indent=1, sort_keys=True, default=_default) + "\n"
    if os.fspath(path) == "-":
        sys.stdout.write(text)
        return
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _default(o: object) -> Any:
    import numpy

    if isinstance(o, numpy.integer):
        return int(o)
    if isinstance(o, numpy.floating):
        return float(o)
    if isinstance(o, numpy.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Right-aligned columns (the first left-aligned), one header line and a rule."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])
