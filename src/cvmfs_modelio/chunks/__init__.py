"""Chunk layouts (CVMFS xattrs, chunkers), trace-vs-layout analysis, what-if sweeps, dedup."""
