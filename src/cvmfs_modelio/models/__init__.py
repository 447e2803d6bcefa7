"""Model corpus: synthetic generator and inspection of model files."""
