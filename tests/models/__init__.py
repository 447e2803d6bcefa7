"""Tests of cvmfs_modelio.models."""
