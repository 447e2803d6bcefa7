"""What ``kserve-compare`` measures, and whether it can: light (no numpy), for the parser."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from cvmfs_modelio.core.errors import UsageError

PATHS = ("download", "cvmfs", "local")
STATES = ("cold", "hot")
MiB = 1 << 20
DEFAULT_RTTS_MS = (0.0, 10.0, 25.0)
DEFAULT_BANDWIDTHS = (100 * MiB,)
DEFAULT_REPS = 3
DEFAULT_TIMEOUT_S = 600.0
# How often the parent looks for the server's port and tries the first inference: the
# time to first inference is late by at most this (Kubernetes probes once a second).
POLL_S = 0.005
CLIENT_PROFILE = "cvmfs-2.12"
EXTRA_HINT = "pip install '.[kserve]'"
# requests (inside kserve_storage) honours proxy variables: loopback must never go to one.
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def kserve_missing() -> str | None:
    """Why KServe's code cannot run here (one line naming the extra), or None."""
    for mod, dist in (("kserve", "kserve"), ("kserve_storage", "kserve-storage")):
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"the {dist} package is not installed: {EXTRA_HINT}"
    return None


def kserve_versions() -> dict[str, str | None]:
    """Installed versions of the packages the measurement runs (None: not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("kserve", "kserve-storage", "onnxruntime", "uvicorn", "fastapi"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


@dataclass(frozen=True)
class CompareParams:
    """What to measure.  RTTs in ms, bandwidths in bytes/s (0: unlimited), times in s."""

    rtts_ms: tuple[float, ...] = DEFAULT_RTTS_MS
    bandwidths: tuple[int, ...] = DEFAULT_BANDWIDTHS
    states: tuple[str, ...] = STATES
    paths: tuple[str, ...] = PATHS
    reps: int = DEFAULT_REPS
    threads: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    client_profile: str = CLIENT_PROFILE

    def validate(self) -> None:
        if not self.rtts_ms:
            raise UsageError("--rtt-ms: no round-trip time given")
        if any(r < 0 for r in self.rtts_ms):
            raise UsageError(f"--rtt-ms: {min(self.rtts_ms)} is negative")
        if not self.bandwidths:
            raise UsageError("--bandwidth: no bandwidth given")
        if any(b < 0 for b in self.bandwidths):
            raise UsageError(f"--bandwidth: {min(self.bandwidths)} is negative")
        for what, given, allowed in (
            ("--states", self.states, STATES),
            ("--paths", self.paths, PATHS),
        ):
            bad = [s for s in given if s not in allowed]
            if bad or not given:
                why = f"{bad[0]!r} is not" if bad else "give at least one of"
                raise UsageError(f"{what}: {why} one of {', '.join(allowed)}")
            if len(set(given)) != len(given):
                raise UsageError(f"{what}: {','.join(given)} names one twice")
        if not 1 <= self.reps <= 1000:
            raise UsageError(f"--reps: {self.reps} is not in [1, 1000]")
        if not 1 <= self.threads <= 64:
            raise UsageError(f"--threads: {self.threads} is not in [1, 64]")
        if not 0 < self.timeout_s <= 86400:
            raise UsageError(f"--timeout: {self.timeout_s} s is not in (0, 86400]")

    def networks(self) -> list[tuple[float, int]]:
        return [(r, b) for r in self.rtts_ms for b in self.bandwidths]
