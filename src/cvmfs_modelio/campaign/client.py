"""The emulated client's settings for a cell, in one place.

``cmio-simfs --client-profile cvmfs-2.12|fast`` prices every fetched object as the real
cvmfs2 2.12 client does, or as the lean emulated client (``docs/simfs.md``); a cell's
requested profile is passed through and recorded as it is, and the runner checks that the
mount reports it (``sim.mount.read_client_profile``).
"""

from __future__ import annotations

from pathlib import Path

from cvmfs_modelio.sim.mount import MountOptions


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
    return MountOptions(
        cache=cache,
        rtt_ms=rtt_ns / 1e6,
        bandwidth=bandwidth_bytes_per_s,
        parallel=parallel,
        prefetch=prefetch,
        log=log,
        client_profile=client_profile,
    )
