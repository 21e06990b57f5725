"""Normalisations fitted on the training split only, then applied to every split.

Each normaliser has ``fit(x)`` returning itself, ``transform(x)``, and a JSON
``state`` so the statistics are written next to the processed data and can be
checked by eye or reused on new data.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Normaliser:
    """Base: statistics over all values (``per_feature=False``) or per feature position."""

    def __init__(self, per_feature: bool = False):
        self.per_feature = per_feature
        self.stats: dict[str, np.ndarray] = {}

    def _reduce(self, x: np.ndarray, fn: Any) -> np.ndarray:
        return fn(x, axis=0, keepdims=True) if self.per_feature else np.asarray(fn(x)).reshape(1)

    def fit(self, x: np.ndarray) -> Normaliser:
        raise NotImplementedError

    def transform(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def state(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "per_feature": self.per_feature} | {
            k: v.tolist() for k, v in self.stats.items()
        }


class ZScore(Normaliser):
    """``(x - mu) / sigma``; constant features keep sigma = 1 so nothing divides by zero."""

    def fit(self, x: np.ndarray) -> ZScore:
        std = self._reduce(x, np.std)
        self.stats = {"mean": self._reduce(x, np.mean), "std": np.where(std > 0, std, 1.0)}
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.stats["mean"]) / self.stats["std"]).astype(np.float32)


class MinMax(Normaliser):
    """``(x - min) / (max - min)``; train values land in [0, 1], others may fall outside."""

    def fit(self, x: np.ndarray) -> MinMax:
        lo, hi = self._reduce(x, np.min), self._reduce(x, np.max)
        self.stats = {"min": lo, "range": np.where(hi > lo, hi - lo, 1.0)}
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.stats["min"]) / self.stats["range"]).astype(np.float32)
