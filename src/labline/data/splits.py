"""Seeded split strategies returning index arrays per part.

A hold-out split returns ``{"train": idx, "val": idx, "test": idx}``. A
resampling split (k-fold, stratified k-fold, leave-one-out, repeated
hold-out) returns one such dict per fold: the test part is cut off first, by
the seed alone, and is the same in every fold, so no fold ever trains or
validates on a test sample and every fold model is tested on the same data.
A given split (``given``, ``given_kfold``) keeps the dataset's own test part instead of drawing one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
from sklearn.model_selection import KFold, LeaveOneOut, ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit, train_test_split

from labline.core.errors import ConfigError

Parts = dict[str, np.ndarray]
F = TypeVar("F", bound=Callable[..., list[Parts]])


def resampling(split: F) -> F:
    """Marks a split that yields one parts dict per fold, so ``labline train`` knows to train once per fold
    without computing the split first. A user-written split function opts in with the same decorator."""
    split.resampling = True  # type: ignore[attr-defined]
    return split


def uses_given_split(split: F) -> F:
    """Marks a split that needs the dataset's own split: the pipeline passes it ``part`` (one of train, val,
    test per sample) as well as the labels."""
    split.given = True  # type: ignore[attr-defined]
    return split


def check_classes(y: np.ndarray) -> None:
    """A split by label needs two labels at least: with one, every model predicts it (and metrics break)."""
    if len(np.unique(y)) < 2:
        raise ConfigError("data", f"every sample has the same label ({y[0]}): a classifier needs two classes or more",
                          "labels of at least 2 classes")


def _check_fraction(key: str, frac: float) -> None:
    if not 0.0 < frac < 1.0:
        raise ConfigError(key, f"must be a fraction in (0, 1), got {frac}")


def _check_val_test(val: float, test: float) -> None:
    _check_fraction("split.val", val)
    _check_fraction("split.test", test)
    if val + test >= 1.0:
        raise ConfigError("split", f"val + test = {val + test:g} leaves no training data", "val + test < 1")


def _hold_out_test(y: np.ndarray, test: float, stratify: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, test)``: the test part every split strategy keeps away from training and tuning."""
    check_classes(y)
    _check_fraction("split.test", test)
    try:
        rest, test_idx = train_test_split(np.arange(len(y)), test_size=test, stratify=y if stratify else None,
                                          random_state=seed)
    except ValueError as exc:
        raise ConfigError("split", f"cannot stratify: {exc}", "stratify=false or larger fractions") from None
    return rest, np.sort(test_idx)


def holdout(
    y: np.ndarray, val: float = 0.2, test: float = 0.2, stratify: bool = True, seed: int = 0, name: str = "holdout"
) -> Parts:
    """Train/val/test hold-out (60/20/20 by default), stratified by label."""
    _check_val_test(val, test)
    rest, test_idx = _hold_out_test(y, test, stratify, seed)
    try:
        train_idx, val_idx = train_test_split(rest, test_size=val / (1.0 - test), stratify=y[rest] if stratify else None,
                                              random_state=seed)
    except ValueError as exc:
        raise ConfigError("split", f"cannot stratify: {exc}", "stratify=false or larger fractions") from None
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": test_idx}


def _folds(rest: np.ndarray, test_idx: np.ndarray, splits: Iterator[tuple[np.ndarray, np.ndarray]],
           key: str) -> list[Parts]:
    """Map the splitter's positions within ``rest`` back to dataset indices; sklearn's own errors become one line."""
    try:
        return [{"train": np.sort(rest[tr]), "val": np.sort(rest[va]), "test": test_idx} for tr, va in splits]
    except ValueError as exc:
        raise ConfigError(key, " ".join(str(exc).split())) from None


def _check_k(k: int, n_rest: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= n_rest:
        raise ConfigError("split.k", f"must be an integer in 2 .. {n_rest} (the non-test samples), got {k!r}", "5 or 10")


@resampling
def kfold(y: np.ndarray, k: int = 5, test: float = 0.2, stratify: bool = True, seed: int = 0,
          name: str = "kfold") -> list[Parts]:
    """k shuffled folds of the non-test data; ``stratify`` applies to the test hold-out only."""
    rest, test_idx = _hold_out_test(y, test, stratify, seed)
    _check_k(k, len(rest))
    return _folds(rest, test_idx, KFold(n_splits=k, shuffle=True, random_state=seed).split(rest), "split.k")


@resampling
def stratified_kfold(y: np.ndarray, k: int = 5, test: float = 0.2, seed: int = 0, name: str = "stratified_kfold") -> list[Parts]:
    """k folds that each keep the class proportions (and a stratified test hold-out)."""
    rest, test_idx = _hold_out_test(y, test, True, seed)
    return _stratified_folds(y, rest, test_idx, k, seed)


def _stratified_folds(y: np.ndarray, rest: np.ndarray, test_idx: np.ndarray, k: int, seed: int) -> list[Parts]:
    """Stratified folds of ``rest``; k above the rarest class's count is refused (each fold needs each class)."""
    _check_k(k, len(rest))
    rarest = int(np.bincount(y[rest]).compress(np.bincount(y[rest]) > 0).min())
    if k > rarest:
        raise ConfigError("split.k", f"{k} stratified folds need {k} samples of every class, the rarest class has "
                          f"{rarest} outside the test part", f"2 .. {rarest}, or split=kfold")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return _folds(rest, test_idx, splitter.split(rest, y[rest]), "split.k")


@resampling
def leave_one_out(y: np.ndarray, test: float = 0.2, stratify: bool = True, seed: int = 0,
                  name: str = "leave_one_out") -> list[Parts]:
    """One fold per non-test sample, validated on that sample alone: n - n_test trainings, for small data."""
    rest, test_idx = _hold_out_test(y, test, stratify, seed)
    return _folds(rest, test_idx, LeaveOneOut().split(rest), "split")


@resampling
def repeated_holdout(y: np.ndarray, repeats: int = 5, val: float = 0.2, test: float = 0.2, stratify: bool = True,
                     seed: int = 0, name: str = "repeated_holdout") -> list[Parts]:
    """``repeats`` independent train/val draws from the non-test data (validation sets may overlap between repeats)."""
    _check_val_test(val, test)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError("split.repeats", f"must be a positive integer, got {repeats!r}")
    rest, test_idx = _hold_out_test(y, test, stratify, seed)
    kind = StratifiedShuffleSplit if stratify else ShuffleSplit
    splitter = kind(n_splits=repeats, test_size=val / (1.0 - test), random_state=seed)
    return _folds(rest, test_idx, splitter.split(rest, y[rest]), "split")


@uses_given_split
def given(y: np.ndarray, part: np.ndarray, val: float = 0.2, seed: int = 0, name: str = "given") -> Parts:
    """The dataset's own split as it is; without a given val part, ``val`` of the train part is carved out
    (stratified, seeded). The given test part is never drawn from."""
    check_classes(y)
    train_idx, test_idx = np.flatnonzero(part == "train"), np.flatnonzero(part == "test")
    if (part == "val").any():
        return {"train": train_idx, "val": np.flatnonzero(part == "val"), "test": test_idx}
    _check_fraction("split.val", val)
    try:
        tr, va = train_test_split(train_idx, test_size=val, stratify=y[train_idx], random_state=seed)
    except ValueError as exc:
        raise ConfigError("split", f"cannot carve a stratified val part out of the given train part: {exc}",
                          "a larger split.val, or a val part in the data") from None
    return {"train": np.sort(tr), "val": np.sort(va), "test": test_idx}


@resampling
@uses_given_split
def given_kfold(y: np.ndarray, part: np.ndarray, k: int = 5, seed: int = 0, name: str = "given_kfold") -> list[Parts]:
    """Stratified k folds of the given train (and val) samples; the given test part tests every fold model."""
    check_classes(y)
    return _stratified_folds(y, np.flatnonzero(part != "test"), np.flatnonzero(part == "test"), k, seed)
