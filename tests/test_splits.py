"""Resampling splits: folds partition the non-test data, the test part stays out of every fold, statistics per fold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labline.core.errors import ConfigError
from labline.data import files
from labline.data.pipeline import (
    all_folds,
    arrays_md5,
    fingerprint,
    is_resampling,
    load_processed,
    split_dataset,
    stage_prepare,
    stage_preprocess,
    stage_split,
    with_fold,
)
from labline.data.sources import sklearn_digits
from labline.data.splits import holdout, kfold, leave_one_out, repeated_holdout, stratified_kfold

Y = sklearn_digits().y


def _assert_partition(folds: list[dict[str, np.ndarray]], n: int) -> None:
    test = set(folds[0]["test"].tolist())
    for parts in folds:
        assert set(parts["test"].tolist()) == test, "every fold tests on the same samples"
        train, val = set(parts["train"].tolist()), set(parts["val"].tolist())
        assert not train & val and not train & test and not val & test
        assert len(train | val | test) == n


@pytest.mark.parametrize("split", [kfold, stratified_kfold])
def test_kfold_validation_parts_partition_the_non_test_data(split) -> None:
    folds = split(Y, k=5, seed=0)
    assert len(folds) == 5
    _assert_partition(folds, len(Y))
    vals = [set(f["val"].tolist()) for f in folds]
    assert all(not a & b for i, a in enumerate(vals) for b in vals[i + 1:]), "validation folds never share samples"
    assert set().union(*vals) == set(range(len(Y))) - set(folds[0]["test"].tolist())
    assert sorted(len(v) for v in vals)[-1] - sorted(len(v) for v in vals)[0] <= 1


def test_test_part_is_the_holdout_test_part() -> None:
    assert np.array_equal(kfold(Y, k=3)[0]["test"], holdout(Y)["test"]), "switching hold-out <-> k-fold keeps the test samples"


def test_stratified_folds_keep_class_shares_and_plain_folds_are_seeded() -> None:
    share = np.bincount(Y, minlength=10) / len(Y)
    for parts in stratified_kfold(Y, k=5):
        assert np.abs(np.bincount(Y[parts["val"]], minlength=10) / len(parts["val"]) - share).max() < 0.02
    a, b, c = kfold(Y, k=3, seed=0), kfold(Y, k=3, seed=0), kfold(Y, k=3, seed=1)
    assert all(np.array_equal(x["val"], y["val"]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0]["val"], c[0]["val"])


def test_leave_one_out_validates_on_each_non_test_sample_once() -> None:
    y = np.repeat(np.arange(3), 10)
    folds = leave_one_out(y, test=0.2)
    assert len(folds) == 24 and all(len(f["val"]) == 1 for f in folds)
    _assert_partition(folds, 30)
    assert sorted(int(f["val"][0]) for f in folds) == sorted(set(range(30)) - set(folds[0]["test"].tolist()))


def test_repeated_holdout_draws_independent_validation_sets() -> None:
    folds = repeated_holdout(Y, repeats=4, val=0.2, test=0.2)
    assert len(folds) == 4
    _assert_partition(folds, len(Y))
    assert all(len(f["val"]) == 360 for f in folds)
    assert len({tuple(f["val"][:20]) for f in folds}) == 4


@pytest.mark.parametrize(("call", "key"), [(lambda: kfold(Y, k=1), "split.k"), (lambda: kfold(Y, k=5000), "split.k"),
                                           (lambda: repeated_holdout(Y, repeats=0), "split.repeats"),
                                           (lambda: kfold(Y, test=1.5), "split.test")])
def test_impossible_resampling_settings_are_one_line_errors(call, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert str(info.value).startswith(key) and "\n" not in str(info.value)


def test_a_fold_without_training_samples_of_a_class_is_rejected(compose) -> None:
    with pytest.raises(ConfigError, match=r"classes \[0\] have no samples in the (train split of fold \d|test split)"):
        all_folds(compose("split=kfold", "split.stratify=false", "split.k=5"), np.array([0] + [1] * 40))


def test_a_config_selects_a_fold_or_all_training_data(compose) -> None:
    cfg = compose("split=kfold", "split.k=3")
    assert is_resampling(cfg) and not is_resampling(compose())
    with pytest.raises(ConfigError, match="split.fold"):
        split_dataset(cfg, Y)
    folds = all_folds(cfg, Y)
    assert np.array_equal(split_dataset(with_fold(cfg, 2), Y)["val"], folds[2]["val"])
    everything = split_dataset(with_fold(cfg, "all"), Y)
    assert len(everything["val"]) == 0 and len(everything["train"]) + len(everything["test"]) == len(Y)
    with pytest.raises(ConfigError, match=r"split.fold: there are 3 folds"):
        split_dataset(with_fold(cfg, 3), Y)
    assert len({fingerprint(with_fold(cfg, f)) for f in (0, 1, 2, "all")}) == 4


def test_split_stage_writes_one_folder_per_fold_and_statistics_come_from_each_fold_train_part(tmp_path, compose) -> None:
    cfg = compose("split=kfold", "split.k=3")
    stage_prepare(cfg, tmp_path)
    stage_split(compose(), tmp_path)  # a hold-out first: its files must not survive the switch to k-fold
    stage_split(cfg, tmp_path)
    split_root = tmp_path / "data" / "splits" / "digits"
    assert sorted(p.name for p in split_root.iterdir()) == ["fold_0", "fold_1", "fold_2"]
    stage_preprocess(cfg, tmp_path)
    raw = files.read_raw(tmp_path / "data" / "raw" / "digits.npz")
    for fold in (0, 1, 2, "all"):
        fold_cfg = with_fold(cfg, fold)
        stats = json.loads((tmp_path / "data" / "processed" / f"digits.fold_{fold}.stats.json").read_text())
        data = load_processed(fold_cfg, tmp_path)
        stored = np.load(tmp_path / "data" / "processed" / f"digits.fold_{fold}.npz")
        assert data.md5 == arrays_md5(stored["x"], stored["y"]), "read from disk"
        assert np.isclose(stats["mean"][0], raw.x[data.parts["train"]].mean(), rtol=1e-5)
        assert not np.isclose(stats["mean"][0], raw.x.mean(), rtol=1e-4), "statistics never include val or test samples"
        in_memory = load_processed(fold_cfg, tmp_path / "elsewhere")
        assert np.allclose(in_memory.x, data.x) and all(np.array_equal(in_memory.parts[p], data.parts[p]) for p in data.parts)
