"""Dataset sources: functions returning images, labels and class names.

A source is the only thing a new dataset needs (plus one YAML in
``conf/data/``): ``prepare`` materialises whatever it returns to ``data/raw``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RawDataset:
    """Images as float32 ``(N, C, H, W)`` (or ``(N, C, L)``), labels as int64 ``(N,)``."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]


def sklearn_digits() -> RawDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, pixel values 0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return RawDataset(x=x, y=y, classes=[str(c) for c in bunch.target_names])
