"""What a dataset source returns, and the checks every dataset passes before it is split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labline.core.errors import ConfigError


@dataclass(frozen=True)
class RawDataset:
    """Images as float32 ``(N, C, H, W)`` (or ``(N, C, L)``), labels as int64 ``(N,)``."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]


def check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Shape and value checks every dataset must pass before it is split."""
    if x.ndim < 2 or len(x) != len(y):
        raise ConfigError(where, f"inputs {x.shape} and labels {y.shape} do not match", "x of shape (N, ...), y of (N,)")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise ConfigError(where, f"{bad} samples contain NaN or inf", "finite values only")
    if len(y) == 0:
        raise ConfigError(where, "contains no samples")
