"""What a dataset source returns, and the checks every dataset passes before it is split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labline.core.errors import ConfigError

PARTS = ("train", "val", "test")
IMPUTE = ("mean", "median", "most_frequent")


@dataclass(frozen=True)
class RawDataset:
    """Images as float32 ``(N, C, H, W)`` (or ``(N, C, L)``, or a table ``(N, F)``), labels as int64 ``(N,)``.

    ``part`` is a dataset's own split (its official train/test, optionally val), one of ``PARTS`` per sample;
    ``split=given`` keeps it. ``impute`` names how missing values (NaN in ``x``) are filled: with statistics of
    the training part, in the preprocess step, so validation and test rows never shape them.
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    part: np.ndarray | None = None
    impute: str | None = None


def check_arrays(x: np.ndarray, y: np.ndarray, where: str, missing_ok: bool = False) -> None:
    """Shape and value checks every dataset must pass before it is split (NaN only where it is imputed later)."""
    # dense labels (segmentation masks) have the images' spatial shape; (N, 1) or one-hot (N, K) are refused
    dense = y.ndim >= 3 and x.ndim >= y.ndim and y.shape[1:] == x.shape[x.ndim - y.ndim + 1:]
    if y.ndim != 1 and not dense:
        raise ConfigError(where, f"labels have shape {y.shape}",
                          "labels of shape (N,): one class index per sample, or (N, H, W) masks matching the images")
    if x.ndim < 2 or len(x) != len(y):
        raise ConfigError(where, f"inputs {x.shape} and labels {y.shape} do not match", "x of shape (N, ...), y of (N,)")
    bad_values = np.isinf(x) if missing_ok else ~np.isfinite(x)
    if bad_values.any():
        bad = int(bad_values.reshape(len(x), -1).any(axis=1).sum())
        raise ConfigError(where, f"{bad} samples contain {'inf' if missing_ok else 'NaN or inf'}", "finite values only")
    if len(y) == 0:
        raise ConfigError(where, "contains no samples")


def check_dataset(ds: RawDataset, where: str) -> None:
    """``check_arrays`` plus the given split (known part names, a train and a test part) and the impute strategy."""
    if ds.impute is not None and ds.impute not in IMPUTE:
        raise ConfigError(f"{where}: missing", f"unknown strategy '{ds.impute}'", ("refuse", *IMPUTE))
    check_arrays(ds.x, ds.y, where, missing_ok=ds.impute is not None)
    if ds.part is None:
        return
    if ds.part.shape != ds.y.shape:
        raise ConfigError(where, f"split assignment {ds.part.shape} does not match labels {ds.y.shape}", "one per sample")
    unknown = sorted(set(ds.part.tolist()) - set(PARTS))
    if unknown:
        raise ConfigError(where, f"unknown split names {unknown}", PARTS)
    for part in ("train", "test"):
        if not (ds.part == part).any():
            raise ConfigError(where, f"the given split has no {part} samples", "a train and a test part (val optional)")
