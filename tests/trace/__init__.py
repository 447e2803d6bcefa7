"""Tests of cvmfs_modelio.trace."""
