"""Tests of cvmfs_modelio.core."""
