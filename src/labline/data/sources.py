"""Dataset sources: functions returning images, labels and class names.

A source is the only thing a new dataset needs (plus one YAML in
``conf/data/``): ``prepare`` materialises whatever it returns to ``data/raw``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labline.core.errors import ConfigError
from labline.core.io import load_npz
from labline.data.raw import RawDataset, check_arrays


def sklearn_digits() -> RawDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, pixel values 0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return RawDataset(x=x, y=y, classes=[str(c) for c in bunch.target_names])


def sklearn_digits_sequence() -> RawDataset:
    """The same digits as a 1-D signal ``(1, 64)``: the pixels in raster order, one value per time step.

    Gives the sequence backbones (conv1d, tcn, gru, lstm) a real univariate
    sequence whose long-range structure (rows 8 steps apart) they must learn.
    """
    images = sklearn_digits()
    return RawDataset(x=images.x.reshape(len(images.x), 1, -1), y=images.y, classes=images.classes)


def npz_file(path: str, classes: list[str] | None = None) -> RawDataset:
    """Bring your own data: an ``.npz`` with ``x`` (N, C, H, W) or (N, C, L) and integer labels ``y``.

    Class names come from ``classes`` (the config), else from a ``classes`` array in the file,
    else from the label values.
    """
    arrays = load_npz(Path(path), ("x", "y"), "an .npz file with arrays x (N, ...) and y (N,)")
    x, y = arrays["x"].astype(np.float32), arrays["y"]
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(path, f"labels y must be integers, got {y.dtype}", "class indices 0..K-1")
    check_arrays(x, y, path)
    names = classes or ([str(c) for c in arrays["classes"]] if "classes" in arrays else [str(c) for c in range(int(y.max()) + 1)])
    if y.min() < 0 or y.max() >= len(names):
        raise ConfigError(path, f"labels span {int(y.min())}..{int(y.max())} but there are {len(names)} classes",
                          "labels 0..K-1 with K class names")
    return RawDataset(x=x, y=y.astype(np.int64), classes=names)
