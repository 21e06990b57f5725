"""The researcher's own data: a given (official) split, CSV tables, image folders, and the defaults tables get."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labline.core.errors import ConfigError
from labline.data import files
from labline.data.image_folders import image_folder
from labline.data.pipeline import all_folds, load_processed, stage_prepare, stage_preprocess, stage_split, with_fold
from labline.data.preprocess import ZScore
from labline.data.sources import npz_file, sklearn_digits
from labline.data.splits import given, given_kfold, stratified_kfold
from labline.data.tables import csv_table

DIGITS = sklearn_digits()


@pytest.fixture
def official(tmp_path: Path) -> Path:
    """Digits with an official split: the first 1200 train, the rest test."""
    path = tmp_path / "official.npz"
    np.savez(path, x_train=DIGITS.x[:1200], y_train=DIGITS.y[:1200], x_test=DIGITS.x[1200:], y_test=DIGITS.y[1200:])
    return path


def test_npz_train_test_keys_are_a_given_split(official: Path) -> None:
    ds = npz_file(str(official))
    assert len(ds.y) == len(DIGITS.y) and (ds.part[:1200] == "train").all() and (ds.part[1200:] == "test").all()
    with pytest.raises(ConfigError, match=r"missing arrays \['y_test'\]"):
        np.savez(official, x_train=DIGITS.x, y_train=DIGITS.y, x_test=DIGITS.x)
        npz_file(str(official))


def test_given_keeps_test_and_carves_a_stratified_seeded_val_out_of_train() -> None:
    part = np.where(np.arange(len(DIGITS.y)) < 1200, "train", "test")
    parts = given(DIGITS.y, part, val=0.25, seed=3)
    assert np.array_equal(parts["test"], np.arange(1200, len(DIGITS.y)))
    assert set(parts["val"]) | set(parts["train"]) == set(range(1200)) and not set(parts["val"]) & set(parts["train"])
    assert len(parts["val"]) == 300
    share = np.bincount(DIGITS.y[parts["val"]]) / np.bincount(DIGITS.y[:1200])
    assert share.min() > 0.2 and share.max() < 0.3, "stratified"
    assert np.array_equal(given(DIGITS.y, part, val=0.25, seed=3)["val"], parts["val"])
    assert not np.array_equal(given(DIGITS.y, part, val=0.25, seed=4)["val"], parts["val"])
    part_val = part.copy()
    part_val[1000:1200] = "val"
    kept = given(DIGITS.y, part_val)
    assert np.array_equal(kept["val"], np.arange(1000, 1200)) and np.array_equal(kept["train"], np.arange(1000))


def test_given_kfold_folds_the_train_part_only() -> None:
    part = np.where(np.arange(len(DIGITS.y)) < 1200, "train", "test")
    folds = given_kfold(DIGITS.y, part, k=4)
    assert len(folds) == 4
    for fold in folds:
        assert np.array_equal(fold["test"], np.arange(1200, len(DIGITS.y)))
        assert max(fold["train"].max(), fold["val"].max()) < 1200
    assert sorted(np.concatenate([f["val"] for f in folds]).tolist()) == list(range(1200))


def test_split_stage_records_the_given_split_and_warns_when_another_split_redraws_it(official: Path, tmp_path: Path,
                                                                                      compose, capsys) -> None:
    cfg = compose("data=npz", f"data.source.path={official}", "split=given")
    stage_prepare(cfg, tmp_path)
    stage_split(cfg, tmp_path)
    folder = tmp_path / "data" / "splits" / official.stem  # a dataset without data.name is named after its file
    test = np.loadtxt(folder / "test.txt", dtype=np.int64)
    assert np.array_equal(test, np.arange(1200, len(DIGITS.y)))
    stage_preprocess(cfg, tmp_path)
    data = load_processed(cfg, tmp_path)
    assert np.array_equal(data.parts["test"], test)
    kfold_cfg = compose("data=npz", f"data.source.path={official}", "split=given_kfold", "split.k=3")
    assert all(np.array_equal(f["test"], test) for f in all_folds(kfold_cfg, data.y, files.read_raw(
        tmp_path / "data" / "raw" / f"{official.stem}.npz").part))
    assert np.array_equal(load_processed(with_fold(kfold_cfg, 1), tmp_path / "x").parts["test"], test)
    capsys.readouterr()
    load_processed(compose("data=npz", f"data.source.path={official}"), tmp_path / "y")
    err = capsys.readouterr().err
    assert err.count("labline: warning: split:") == 1 and "split=given keeps it" in err


def test_split_given_without_a_split_of_the_data_is_refused(compose) -> None:
    with pytest.raises(ConfigError, match="data=digits comes without a split of its own"):
        all_folds(compose("split=given"), DIGITS.y)


def test_stratified_k_above_the_rarest_class_is_refused() -> None:
    y = np.array([0] * 50 + [1] * 50 + [2] * 4)
    with pytest.raises(ConfigError, match=r"split.k: 5 stratified folds .* rarest class has 3"):
        stratified_kfold(y, k=5, test=0.2)


@pytest.fixture
def table(tmp_path: Path) -> Path:
    frame = pd.DataFrame({"size": [1.0, 2.0, 3.0, 4.0, 5.0, 100.0, 7.0, 8.0],
                          "colour": ["red", "blue", "red", "green", "blue", "red", "green", "blue"],
                          "kind": ["cat", "dog"] * 4, "part": ["train"] * 6 + ["test"] * 2})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def test_csv_one_hot_encodes_text_columns_and_keeps_the_split_column(table: Path) -> None:
    ds = csv_table(str(table), target="kind", split_column="part")
    assert ds.classes == ["cat", "dog"] and ds.y.tolist() == [0, 1] * 4
    assert ds.x.shape == (8, 4), "size + three colours"
    assert ds.x[:, 1:].sum(axis=1).tolist() == [1.0] * 8
    assert ds.part.tolist() == ["train"] * 6 + ["test"] * 2
    assert csv_table(str(table), target="kind", features=["size"], split_column="part").x.shape == (8, 1)
    with pytest.raises(ConfigError, match=r"data.source.target: no column 'kinds'.*valid: size, colour, kind, part"):
        csv_table(str(table), target="kinds")


def test_csv_missing_values_are_refused_with_the_column_or_imputed_from_the_train_part(table: Path) -> None:
    frame = pd.read_csv(table)
    frame.loc[1, "size"] = np.nan
    frame.to_csv(table, index=False)
    with pytest.raises(ConfigError, match=r"missing values in column size \(1 rows\)"):
        csv_table(str(table), target="kind")
    ds = csv_table(str(table), target="kind", split_column="part", missing="median")
    assert np.isnan(ds.x[1, 0]) and ds.impute == "median"
    parts = {"train": np.arange(6), "val": np.arange(0), "test": np.arange(6, 8)}
    from labline.data.pipeline import _imputed

    assert _imputed(ds, parts["train"])[1, 0] == np.median([1, 3, 4, 5, 100]), "train rows only"
    with pytest.raises(ConfigError, match="data.source.missing: unknown strategy 'zero'"):
        csv_table(str(table), target="kind", missing="zero")


def test_zscore_scales_table_columns_on_their_own_by_default_and_warns_on_mixed_scales(capsys) -> None:
    x = np.stack([np.linspace(0, 1, 50), np.linspace(0, 1000, 50)], axis=1)
    z = ZScore().fit(x).transform(x)
    assert np.allclose(z.std(axis=0), 1.0) and capsys.readouterr().err == ""
    ZScore(per_feature=False).fit(x)
    err = capsys.readouterr().err
    assert err.startswith("labline: warning: preprocess.per_feature:") and err.count("\n") == 1
    ZScore().fit(DIGITS.x)  # images: one statistic, one channel: nothing to warn about
    assert capsys.readouterr().err == ""


def _write_images(root: Path, n: int, mode: str = "L") -> None:
    for i in range(n):
        label = DIGITS.y[i]
        path = root / str(label) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((DIGITS.x[i, 0] * 255 / 16).astype(np.uint8)).convert(mode).save(path)


def test_image_folder_reads_one_class_per_subfolder_at_the_configured_size_and_mode(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs", 60)
    ds = image_folder(str(tmp_path / "imgs"), size=8, mode="L")
    assert ds.classes == [str(c) for c in range(10)] and ds.x.shape == (60, 1, 8, 8) and ds.part is None
    order = sorted(range(60), key=lambda i: (DIGITS.y[i], f"{i}.png"))
    assert ds.y.tolist() == DIGITS.y[order].tolist()
    assert np.allclose(ds.x[0, 0], (DIGITS.x[order[0], 0] * 255 / 16).astype(np.uint8))
    assert image_folder(str(tmp_path / "imgs"), size=[16, 12], mode="RGB").x.shape == (60, 3, 16, 12)
    with pytest.raises(ConfigError, match="data.source.mode: unknown channel mode 'CMYKX'"):
        image_folder(str(tmp_path / "imgs"), mode="CMYKX")
    (tmp_path / "imgs" / "3" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="broken.png: is not a readable image"):
        image_folder(str(tmp_path / "imgs"), size=8)


def test_image_folder_with_train_and_test_folders_is_a_given_split(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs" / "train", 50)
    _write_images(tmp_path / "imgs" / "test", 20)
    ds = image_folder(str(tmp_path / "imgs"), size=8)
    assert (ds.part == "train").sum() == 50 and (ds.part == "test").sum() == 20


def test_preload_hands_its_data_to_the_runs_own_load_once(compose, official: Path, tmp_path: Path) -> None:
    """``labline train`` loads the data before the training stack is imported (so bad data is reported in a
    second); the run's load of the same config takes that result, once, and any other config loads afresh."""
    from labline.data.pipeline import preload

    cfg = compose("data=npz", f"data.source.path={official}", "split=given")
    preload(cfg, tmp_path)
    first = load_processed(cfg, tmp_path)
    again = load_processed(cfg, tmp_path)
    assert first is not again, "taken once: a second load is the run's own"
    np.testing.assert_array_equal(first.x, again.x)
    assert first.parts.keys() == again.parts.keys() and all((first.parts[k] == again.parts[k]).all() for k in first.parts)
    preload(cfg, tmp_path)
    other = compose("data=npz", f"data.source.path={official}", "split=given", "seed=1")
    assert load_processed(other, tmp_path) is not load_processed(cfg, tmp_path) is not None
