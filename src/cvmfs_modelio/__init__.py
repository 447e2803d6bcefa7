"""cvmfs-modelio: how machine-learning model files are read from CernVM-FS, measured."""

from __future__ import annotations

__version__ = "0.1.0"

from cvmfs_modelio.probe import ProbeResult, ProbeSummary, probe

__all__ = ["ProbeResult", "ProbeSummary", "__version__", "probe"]
