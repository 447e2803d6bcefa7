"""Serving a model with KServe's own code, its storage read three ways (``kserve-compare``).

- :mod:`.compare`: the measurement (download-then-load as KServe's storage initializer
  does, lazy CVMFS read in place, local disk), cold and hot, time from process start to
  the first successful v2 REST inference;
- :mod:`.kserve_server` and :mod:`.storage_init`: the two measured children (the only
  modules that import ``kserve`` / ``kserve_storage``, the optional ``[kserve]`` extra),
  started, timed and stopped by :mod:`.children`;
- :mod:`.params`: what to measure, and whether KServe is installed (light: the parser's);
- :mod:`.v2`: the Open Inference Protocol (v2) REST request and response as JSON;
- :mod:`.sockets`: which TCP ports a process tree listens on (from ``/proc``).
"""
