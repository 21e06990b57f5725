"""Data stages: sources, splits, train-only statistics, and readers that reject bad files."""

from __future__ import annotations

import numpy as np
import pytest

from labline.core.errors import ConfigError
from labline.data import files
from labline.data.pipeline import fingerprint, load_processed, stage_prepare, stage_preprocess, stage_split
from labline.data.preprocess import MinMax, ZScore
from labline.data.raw import RawDataset
from labline.data.sources import sklearn_digits
from labline.data.splits import holdout
from testroot import CHECKOUT


def test_digits_are_1797_real_images_of_1x8x8() -> None:
    ds = sklearn_digits()
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == np.float32
    assert ds.y.shape == (1797,) and sorted(set(ds.y.tolist())) == list(range(10))
    assert ds.x.max() == 16.0 and ds.x.min() == 0.0


def test_holdout_is_seeded_disjoint_and_stratified() -> None:
    y = sklearn_digits().y
    a, b, c = holdout(y, seed=0), holdout(y, seed=0), holdout(y, seed=1)
    assert all(np.array_equal(a[p], b[p]) for p in a)
    assert not np.array_equal(a["test"], c["test"])
    assert not set(a["train"]) & set(a["val"]) and not set(a["train"]) & set(a["test"]) and not set(a["val"]) & set(a["test"])
    assert abs(len(a["test"]) / len(y) - 0.2) < 0.005 and abs(len(a["val"]) / len(y) - 0.2) < 0.005
    for part in a.values():
        share = np.bincount(y[part], minlength=10) / len(part)
        assert np.abs(share - np.bincount(y) / len(y)).max() < 0.01


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (0.5, 0.5), (0.2, 1.2)])
def test_impossible_fractions_are_config_errors(val: float, test: float) -> None:
    with pytest.raises(ConfigError, match="split"):
        holdout(np.arange(100) % 2, val=val, test=test)


def test_zscore_and_minmax_use_training_statistics_only() -> None:
    train = np.array([[0.0], [2.0], [4.0]])
    other = np.array([[100.0]])
    z = ZScore().fit(train)
    assert np.allclose(z.transform(train).ravel(), (train.ravel() - 2.0) / np.std([0, 2, 4]))
    assert np.isclose(z.transform(other)[0, 0], (100 - 2.0) / np.std([0, 2, 4]))
    m = MinMax().fit(train)
    assert np.allclose(m.transform(train).ravel(), [0.0, 0.5, 1.0])
    assert np.isclose(m.transform(other)[0, 0], 25.0)


def test_stages_write_files_that_load_back_identically(tmp_path, compose) -> None:
    cfg = compose()
    stage_prepare(cfg, tmp_path)
    stage_split(cfg, tmp_path)
    stage_preprocess(cfg, tmp_path)
    from_disk = load_processed(cfg, tmp_path)
    in_memory = load_processed(cfg, tmp_path / "elsewhere")
    assert from_disk.fingerprint == in_memory.fingerprint == fingerprint(cfg)
    assert np.array_equal(from_disk.x, in_memory.x)
    assert all(np.array_equal(from_disk.parts[p], in_memory.parts[p]) for p in from_disk.parts)
    assert from_disk.md5 == in_memory.md5, "one data_md5 for the same arrays, read from DVC's file or made in memory"
    train = from_disk.x[from_disk.parts["train"]]
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-4, "z-score fitted on train"


def test_changed_split_config_does_not_reuse_processed_file(tmp_path, compose) -> None:
    cfg = compose()
    for stage in (stage_prepare, stage_split, stage_preprocess):
        stage(cfg, tmp_path)
    other = load_processed(compose("split.seed=3"), tmp_path)
    assert other.fingerprint != fingerprint(cfg)
    assert other.md5 != load_processed(cfg, tmp_path).md5


def test_missing_truncated_and_nan_files_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        files.read_raw(tmp_path / "nope.npz")
    ds = sklearn_digits()
    good = tmp_path / "good.npz"
    files.write_raw(ds, good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        files.read_raw(truncated)
    x = ds.x.copy()
    x[3, 0, 0, 0] = np.nan
    nan_file = tmp_path / "nan.npz"
    files.write_raw(RawDataset(x, ds.y, ds.classes), nan_file)
    with pytest.raises(ConfigError, match="1 samples contain NaN"):
        files.read_raw(nan_file)


def test_split_indices_out_of_range_are_rejected(tmp_path) -> None:
    parts = {"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([99])}
    files.write_split(parts, tmp_path)
    with pytest.raises(ConfigError, match="indices outside"):
        files.read_split(tmp_path, 10)


def test_class_without_training_samples_is_rejected(compose) -> None:
    from labline.data.pipeline import split_dataset

    y = np.array([0] * 50 + [1] * 50 + [2])
    with pytest.raises(ConfigError, match=r"classes \[2\] have no samples"):
        split_dataset(compose("split.stratify=false"), y)


def test_project_root_escapes_dvc_temp_workspaces(tmp_path, monkeypatch) -> None:
    from labline.core.paths import project_root, workspace_root

    monkeypatch.delenv("LABLINE_PROJECT_ROOT")
    assert workspace_root(CHECKOUT / "src" / "labline") == CHECKOUT
    project = tmp_path / "proj"
    temp = project / ".dvc" / "tmp" / "exps" / "tmpabc123"
    temp.mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    (temp / "dvc.yaml").write_text("stages: {}\n")
    assert workspace_root(temp) == temp
    assert project_root(temp) == project


def test_array_parts_are_served_in_whole_batches_identical_to_a_per_sample_loader() -> None:
    """The whole-batch path (one process) yields the batches a per-sample DataLoader over the same seeded sampler
    yields, epoch after epoch, also when the epoch is set after the loader's iterator was created (a resume)."""
    import torch
    from torch.utils.data import DataLoader

    from labline.data.datamodule import ArrayDataModule, RowBatches
    from labline.data.pipeline import ProcessedData
    from labline.data.samplers import EpochShuffle

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(70, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 70)
    parts = {"train": np.arange(0, 50), "val": np.arange(50, 60), "test": np.arange(60, 70)}
    module = ArrayDataModule(ProcessedData(x, y, ["a", "b", "c"], parts, "f", "m"), batch_size=8, seed=3)
    train = module.train_dataloader()
    assert isinstance(train.dataset, RowBatches) and len(train) == 7 and len(train.dataset) == 50
    for epoch in (0, 1, 5):
        batches = iter(train)
        module.set_epoch(epoch)  # after the iterator exists, as EpochSeed's call comes after a resume
        reference = EpochShuffle(50, 3)
        reference.set_epoch(epoch)
        expected = DataLoader(module.sets["train"], batch_size=8, sampler=reference)
        got = list(batches)
        assert len(got) == len(expected) == 7
        for (bx, by), (ex, ey) in zip(got, expected, strict=True):
            assert torch.equal(bx, ex) and torch.equal(by, ey)
    orders = [torch.cat([b[1] for b in train]) for _ in range(2)]
    module.set_epoch(2)
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], torch.cat([b[1] for b in train]))
    val = list(module.val_dataloader())
    assert [len(b[0]) for b in val] == [8, 2] and torch.equal(torch.cat([b[1] for b in val]), torch.from_numpy(y[50:60]))
