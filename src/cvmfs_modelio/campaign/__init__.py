"""Campaigns: models published per chunk configuration, loaded from an emulated CVMFS mount."""
