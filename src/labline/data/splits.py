"""Seeded split strategies returning index arrays per part.

A split returns ``{"train": idx, "val": idx, "test": idx}``; the test part is
fixed by the seed and never used while tuning.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from labline.errors import ConfigError


def holdout(
    y: np.ndarray, val: float = 0.2, test: float = 0.2, stratify: bool = True, seed: int = 0, name: str = "holdout"
) -> dict[str, np.ndarray]:
    """Train/val/test hold-out (60/20/20 by default), stratified by label."""
    for key, frac in (("split.val", val), ("split.test", test)):
        if not 0.0 < frac < 1.0:
            raise ConfigError(key, f"must be a fraction in (0, 1), got {frac}")
    if val + test >= 1.0:
        raise ConfigError("split", f"val + test = {val + test:g} leaves no training data", "val + test < 1")
    index = np.arange(len(y))
    strat = y if stratify else None
    try:
        rest, test_idx = train_test_split(index, test_size=test, stratify=strat, random_state=seed)
        strat_rest = y[rest] if stratify else None
        train_idx, val_idx = train_test_split(rest, test_size=val / (1.0 - test), stratify=strat_rest, random_state=seed)
    except ValueError as exc:
        raise ConfigError("split", f"cannot stratify: {exc}", "stratify=false or larger fractions") from None
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}
