"""Normalisations fitted on the training split only, then applied to every split.

Each normaliser has ``fit(x)`` returning itself, ``transform(x)``, and a JSON
``state`` so the statistics are written next to the processed data and can be
checked by eye or reused on new data. ``Atan`` and ``L2`` have no statistics:
they transform each value or sample on its own, so there is nothing to leak
from validation or test data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labline.core.errors import ConfigError, warn_once

SCALE_RATIO = 100.0


def _feature_scales(x: np.ndarray) -> np.ndarray:
    """Standard deviation per feature: per column of a table ``(N, F)``, per channel of images and sequences."""
    axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    return np.nanstd(x.astype(np.float64), axis=axes)


class Normaliser:
    """Base: statistics over all values (``per_feature=False``) or per feature position (``true``);
    ``auto`` is per feature for tables ``(N, F)``, whose columns carry unrelated units, and global otherwise."""

    def __init__(self, per_feature: bool | str = "auto"):
        if per_feature not in (True, False, "auto"):
            raise ConfigError("preprocess.per_feature", f"must be true, false or auto, got {per_feature!r}",
                              "true, false, auto")
        self.per_feature = per_feature
        self.stats: dict[str, np.ndarray] = {}

    def _resolve(self, x: np.ndarray) -> None:
        """Fix ``auto`` on the training data; warn when one global statistic spans features of very different scale."""
        if self.per_feature == "auto":
            self.per_feature = x.ndim == 2
        scales = _feature_scales(x)
        scales = scales[scales > 0]
        if not self.per_feature and scales.size > 1 and scales.max() > SCALE_RATIO * scales.min():
            warn_once("preprocess.per_feature", f"one {type(self).__name__} over features whose scales differ "
                      f"{scales.max() / scales.min():.0f}x (std {scales.min():.3g} .. {scales.max():.3g})",
                      "preprocess.per_feature=true scales each feature on its own")

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
        self._resolve(x)
        std = self._reduce(x, np.std)
        self.stats = {"mean": self._reduce(x, np.mean), "std": np.where(std > 0, std, 1.0)}
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.stats["mean"]) / self.stats["std"]).astype(np.float32)


class MinMax(Normaliser):
    """``(x - min) / (max - min)``; train values land in [0, 1], others may fall outside."""

    def fit(self, x: np.ndarray) -> MinMax:
        self._resolve(x)
        lo, hi = self._reduce(x, np.min), self._reduce(x, np.max)
        self.stats = {"min": lo, "range": np.where(hi > lo, hi - lo, 1.0)}
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.stats["min"]) / self.stats["range"]).astype(np.float32)


class Log(Normaliser):
    """``log10(x + offset) / log10(max + offset)`` with ``max`` fitted on the train split.

    The formula needs ``x + offset >= 1`` (below 1 the logarithm turns negative, at 0 it is infinite).
    Values that break it are a ``ConfigError`` naming the offset that would fix them, on the train split
    at fit time and on any split at transform time: clipping or shifting them silently would change the
    data. ``offset: 1`` is ``log1p`` scaling and suits counts and pixel intensities that start at 0.
    """

    def __init__(self, offset: float = 0.0, per_feature: bool | str = "auto"):
        super().__init__(per_feature)
        self.offset = offset

    def _shifted(self, x: np.ndarray) -> np.ndarray:
        shifted = x.astype(np.float64) + self.offset
        low = float(shifted.min()) if shifted.size else 1.0
        if not low >= 1.0:
            raise ConfigError("preprocess.offset", f"log needs x + offset >= 1, but the data reach {low - self.offset:g} "
                              f"with offset {self.offset:g}", f">= {1.0 - low + self.offset:g}, or another normaliser")
        return shifted

    def fit(self, x: np.ndarray) -> Log:
        self._resolve(x)
        log_max = np.log10(self._reduce(self._shifted(x), np.max))
        self.stats = {"log_max": np.where(log_max > 0, log_max, 1.0)}
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.log10(self._shifted(x)) / self.stats["log_max"]).astype(np.float32)

    @property
    def state(self) -> dict[str, Any]:
        return super().state | {"offset": self.offset}


class _Stateless(Normaliser):
    """A transform of each value or sample on its own: nothing is fitted, so nothing depends on the split."""

    def __init__(self) -> None:
        super().__init__(per_feature=False)

    def fit(self, x: np.ndarray) -> _Stateless:
        return self


class Atan(_Stateless):
    """``atan(x) * 2 / pi``: squashes any real value into (-1, 1), near-linear around 0, heavy tails compressed."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.arctan(x) * 2.0 / np.pi).astype(np.float32)


class L2(_Stateless):
    """Per-sample ``x / ||x||_2`` over all of a sample's values; an all-zero sample stays zero."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        norm = np.sqrt(np.square(x.astype(np.float64)).reshape(len(x), -1).sum(1))
        norm = np.where(norm > 0, norm, 1.0).reshape(-1, *([1] * (x.ndim - 1)))
        return (x / norm).astype(np.float32)
