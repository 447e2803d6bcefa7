"""Deployment tools: plan a publication, prepare a model for CVMFS, file bundles, pre-warming."""
