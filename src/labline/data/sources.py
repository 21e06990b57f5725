"""Dataset sources: functions returning images, labels and class names.

A source is the only thing a new dataset needs (plus one YAML in
``conf/data/``): ``prepare`` materialises whatever it returns to ``data/raw``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labline.core.errors import ConfigError
from labline.core.io import load_npz
from labline.data.raw import PARTS, RawDataset, check_dataset


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


def _npz_arrays(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """``x, y`` from one file: plain ``x, y``, or a given split ``x_train, y_train, x_test, y_test[, x_val, y_val]``
    concatenated, with the part each sample came from."""
    remedy = "an .npz file with arrays x (N, ...) and y (N,), or x_train, y_train, x_test, y_test [, x_val, y_val]"
    arrays = load_npz(Path(path), (), remedy)
    if "x" in arrays and "y" in arrays:
        return arrays["x"], arrays["y"], None, arrays
    given = [p for p in PARTS if f"x_{p}" in arrays or f"y_{p}" in arrays]
    missing = [f"{a}_{p}" for p in sorted({"train", "test", *given}, key=PARTS.index) for a in "xy" if f"{a}_{p}" not in arrays]
    if missing:
        raise ConfigError(path, f"is missing arrays {missing}", remedy)
    shapes = {arrays[f"x_{p}"].shape[1:] for p in given}
    if len(shapes) > 1:
        raise ConfigError(path, f"the parts' inputs differ in shape {sorted(shapes)}", "one sample shape in every part")
    x = np.concatenate([arrays[f"x_{p}"] for p in given])
    y = np.concatenate([arrays[f"y_{p}"] for p in given])
    part = np.concatenate([np.full(len(arrays[f"y_{p}"]), p) for p in given])
    return x, y, part, arrays


def npz_file(path: str, classes: list[str] | None = None) -> RawDataset:
    """Bring your own data: an ``.npz`` with ``x`` (N, C, H, W), (N, C, L) or (N, F) and integer labels ``y``,
    or the dataset's own split as ``x_train, y_train, x_test, y_test`` (and optionally ``x_val, y_val``).

    Class names come from ``classes`` (the config), else from a ``classes`` array in the file,
    else from the label values.
    """
    x, y, part, arrays = _npz_arrays(path)
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(path, f"labels y must be integers, got {y.dtype}", "class indices 0..K-1")
    ds = RawDataset(x=x.astype(np.float32), y=y.astype(np.int64), classes=[], part=part)
    check_dataset(ds, path)
    names = classes or ([str(c) for c in arrays["classes"]] if "classes" in arrays else [str(c) for c in range(int(y.max()) + 1)])
    if y.min() < 0 or y.max() >= len(names):
        raise ConfigError(path, f"labels span {int(y.min())}..{int(y.max())} but there are {len(names)} classes",
                          "labels 0..K-1 with K class names")
    return RawDataset(x=ds.x, y=ds.y, classes=list(names), part=part)
