"""Tests of cvmfs_modelio.chunks."""
