"""Tests of cvmfs_modelio.campaign."""
