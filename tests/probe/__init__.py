"""Tests of cvmfs_modelio.probe."""
