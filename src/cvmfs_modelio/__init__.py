"""cvmfs-modelio: how machine-learning model files are read from CernVM-FS, measured."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
