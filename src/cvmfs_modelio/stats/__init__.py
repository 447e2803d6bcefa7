"""Statistics: the per-fetch cost model, its fit, recommendations and their validation."""

# Here rather than in stats.fit / stats.recommend (which import pandas and scipy, ~0.5 s):
# `recommend`'s --bootstrap default and --objective choices are read when any command's
# parser is built, `--help` included.
DEFAULT_BOOT = 200  # bootstrap resamples of a fit
OBJECTIVES = ("cold-start", "bytes", "storage", "update", "weighted")
