"""The environment a measurement ran in, for ``--json`` outputs: kernel, CPU, versions."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from cvmfs_modelio import __version__


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Kernel, CPU model and count, page size, Python/numpy/package versions, euid."""
    import numpy as np

    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "page_size": os.sysconf("SC_PAGESIZE"),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cvmfs_modelio": __version__,
        "euid": os.geteuid(),
    }
