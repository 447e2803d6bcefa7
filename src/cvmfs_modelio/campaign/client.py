"""The emulated client's settings for a cell, in one place (the client-profile switch).

The timing-fidelity work adds ``--client-profile cvmfs-2.12|fast`` to ``cmio-simfs``
(``fast`` keeps today's behaviour).  Until ``sim.mount.MountOptions`` has a
``client_profile`` field, the client can only run today's behaviour, so a campaign's
requested profile is measured and *recorded* as ``fast``: a number is never labelled as
calibrated when it was not.  Once the field exists the requested profile is passed through
and recorded as it is; nothing else changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.sim.mount import MountOptions

UNCALIBRATED_PROFILE = "fast"  # what today's cmio-simfs is, in the timing issue's terms


def client_profiles_supported() -> bool:
    """True when the installed client takes ``--client-profile`` (MountOptions has it)."""
    return "client_profile" in {f.name for f in dataclasses.fields(MountOptions)}


def effective_profile(requested: str) -> str:
    """The profile a cell requesting ``requested`` is really measured with."""
    return requested if client_profiles_supported() else UNCALIBRATED_PROFILE


def mount_options(
    *,
    cache: Path,
    log: Path | None,
    rtt_ns: int,
    bandwidth_bytes_per_s: int,
    parallel: int,
    prefetch: int,
    client_profile: str,
) -> MountOptions:
    """``MountOptions`` for a cell (RTT in ns, bandwidth in bytes/s, 0: unlimited)."""
    kw: dict[str, object] = {
        "cache": cache,
        "rtt_ms": rtt_ns / 1e6,
        "bandwidth": bandwidth_bytes_per_s,
        "parallel": parallel,
        "prefetch": prefetch,
        "log": log,
    }
    if client_profiles_supported():
        kw["client_profile"] = client_profile
    elif client_profile != UNCALIBRATED_PROFILE:
        raise UsageError(
            f"client profile {client_profile!r}: this cmio-simfs has no --client-profile "
            f"(cells are measured as {UNCALIBRATED_PROFILE!r})"
        )
    return MountOptions(**kw)  # type: ignore[arg-type]
