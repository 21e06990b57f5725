"""Feature extractors. Each takes ``in_shape`` and exposes ``out_features``."""
