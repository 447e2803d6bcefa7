"""JSON results of ``sim`` commands and benchmarks: the environment record and atomic writes.

Both come from :mod:`cvmfs_modelio.core.jsonout`; only the layout of the document differs (the
caller puts ``environment`` where it wants it, indent 2).
"""

from __future__ import annotations

import json
import os
from typing import Any

from cvmfs_modelio.core.jsonout import environment, write_atomic

__all__ = ["environment", "write_json"]


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (temp file in the same directory + rename)."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
