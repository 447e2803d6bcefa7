"""The Python face of the native access-pattern engine (``csrc/probe``)."""

from __future__ import annotations

from cvmfs_modelio.probe.engine import ProbeResult, ProbeSummary, probe

__all__ = ["ProbeResult", "ProbeSummary", "probe"]
