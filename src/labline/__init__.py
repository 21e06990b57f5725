"""labline: declarative experiment pipelines for deep-learning research."""

__version__ = "0.1.0"
