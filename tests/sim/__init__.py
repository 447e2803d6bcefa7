"""Tests of cvmfs_modelio.sim."""
