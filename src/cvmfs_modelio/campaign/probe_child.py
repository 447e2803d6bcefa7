"""Child process of the probe loaders: ``python -m cvmfs_modelio.campaign.probe_child
PATTERN BLOCK COUNT FILE...`` runs one probe pattern over each file in turn and prints
one JSON line ``{"elapsed_ns": ..., "bytes": ..., "ops": ...}`` (CLOCK_MONOTONIC, from
before the first open to after the last byte).  Errors: one line on stderr, exit 1.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        sys.stderr.write(
            "usage: python -m cvmfs_modelio.campaign.probe_child PATTERN BLOCK COUNT FILE...\n"
        )
        return 2
    from cvmfs_modelio.core.errors import UsageError
    from cvmfs_modelio.probe import probe

    pattern, block, count, files = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    total_bytes = 0
    ops = 0
    t0 = time.monotonic_ns()
    try:
        for f in files:
            r = probe(f, pattern, block=block, count=count or None)
            total_bytes += r.summary.bytes
            ops += r.summary.ops
    except UsageError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    elapsed = time.monotonic_ns() - t0
    sys.stdout.write(json.dumps({"elapsed_ns": elapsed, "bytes": total_bytes, "ops": ops}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
