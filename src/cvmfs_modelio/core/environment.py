"""The machine a result was measured on: one ``environment`` record for every result file.

Everything a reader needs to judge a number without asking: host, kernel, CPU, memory, page
size, whether the run was root (cache eviction and residency are only trusted as root), the
versions of the libraries that do the work (numpy, ONNX Runtime, and the C libraries the
emulated client links: libfuse, libcurl, zlib), and the file systems under test with their
mount options.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MountEntry:
    """One line of ``/proc/self/mounts``."""

    source: str
    mount_point: str
    fs_type: str
    options: str


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...).
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1 : i + 4]
        if field[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mounts(text: str) -> list[MountEntry]:
    """The entries of a ``/proc/mounts``-format text (malformed lines are skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        out.append(MountEntry(_unescape(parts[0]), _unescape(parts[1]), parts[2], parts[3]))
    return out


def mount_of(
    path: str | os.PathLike[str], mounts: Iterable[MountEntry] | None = None
) -> MountEntry | None:
    """The mount holding ``path`` (longest mount point that is a prefix of its real path)."""
    if mounts is None:
        try:
            mounts = parse_mounts(Path("/proc/self/mounts").read_text())
        except OSError:
            return None
    real = os.path.realpath(os.fspath(path))
    best: MountEntry | None = None
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        inside = real == mp or real.startswith(mp + "/") or mp == "/"
        if inside and (best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/")):
            best = m
    return best


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _c_version(names: tuple[str, ...], symbol: str) -> str | None:
    """Version string a C library reports about itself (the one the emulated client loads)."""
    for name in names:
        path = ctypes.util.find_library(name) or None
        for candidate in filter(None, (path, f"lib{name}.so")):
            try:
                lib = ctypes.CDLL(candidate)
                fn = getattr(lib, symbol)
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_char_p
            raw = fn()
            return raw.decode("ascii", "replace") if raw else None
    return None


def _py_version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # a broken optional package must not sink a result file
        return None
    v = getattr(mod, "__version__", None)
    return str(v) if v is not None else None


@functools.cache
def _static() -> dict[str, Any]:
    """The parts that cannot change during a run (computed once per process)."""
    import zlib

    from cvmfs_modelio import __version__

    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "page_size_bytes": os.sysconf("SC_PAGE_SIZE"),
        "python": sys.version.split()[0],
        "versions": {
            "cvmfs_modelio": __version__,
            "numpy": _py_version("numpy"),
            "scipy": _py_version("scipy"),
            "onnxruntime": _py_version("onnxruntime"),
            "onnx": _py_version("onnx"),
            "libfuse": _c_version(("fuse3",), "fuse_pkgversion"),
            "libcurl": _c_version(("curl", "curl-gnutls"), "curl_version"),
            "zlib": _c_version(("z",), "zlibVersion") or zlib.ZLIB_RUNTIME_VERSION,
        },
    }


def environment(
    measured: Iterable[str | os.PathLike[str]] = (), *, tools: bool = False
) -> dict[str, Any]:
    """The ``environment`` record: machine, versions, root, and the file systems of ``measured``.

    ``measured`` are the paths a result is about; each is listed with the mount holding it
    (file system type, source, mount options). ``tools`` adds nginx's and squid's versions.
    """
    env: dict[str, Any] = {**_static(), "versions": dict(_static()["versions"])}
    env["root"] = os.geteuid() == 0
    env["load_average_1m"] = os.getloadavg()[0]
    fs = []
    for p in measured:
        m = mount_of(p)
        fs.append(
            {
                "path": os.fspath(p),
                "mount_point": m.mount_point if m else None,
                "fs_type": m.fs_type if m else None,
                "source": m.source if m else None,
                "mount_options": m.options if m else None,
            }
        )
    env["file_systems"] = fs
    if tools:
        env["versions"]["nginx"] = _tool_version(["nginx", "-v"])
        env["versions"]["squid"] = _tool_version(["squid", "-v"])
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
