"""Where a model's tensors lie, for labelling heat maps: :func:`models.inspect.inspect_model`.

A file the readers cannot map (not a model, a format without a reader) gets no labels rather
than no report.
"""

from __future__ import annotations

import os

from cvmfs_modelio.core.errors import UsageError
from cvmfs_modelio.models.inspect import ModelMap
from cvmfs_modelio.models.inspect import inspect_model as _inspect


def inspect_model(path: str | os.PathLike[str]) -> ModelMap | None:
    """The tensor map of ``path``, or None when no reader can map it."""
    try:
        return _inspect(path)
    except UsageError:
        return None
