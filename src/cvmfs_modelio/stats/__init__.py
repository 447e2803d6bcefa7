"""Statistics: the per-fetch cost model, its fit, recommendations and their validation."""
