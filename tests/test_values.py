"""Run-wide values checked from the composed config alone, before Hydra makes a run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from labline.core.config import compose_config, without_sweeps
from labline.core.errors import ConfigError
from labline.core.values import check_epochs, check_source_paths, check_values, check_writable
from testroot import CONF


@pytest.mark.parametrize("epochs", [0, -1, 1.5, "30"])
def test_max_epochs_must_be_a_positive_integer(epochs) -> None:
    with pytest.raises(ConfigError, match="trainer.max_epochs: must be a positive number of epochs"):
        check_epochs({"max_epochs": epochs})
    check_epochs({"max_epochs": 1})
    check_epochs({"max_steps": 10})  # a step budget without an epoch count is Lightning's business


def test_a_missing_source_file_or_folder_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        check_source_paths(OmegaConf.create({"path": str(tmp_path / "none.npz")}))
    with pytest.raises(ConfigError, match="data.source.root"):
        check_source_paths(OmegaConf.create({"root": str(tmp_path / "none")}))
    check_source_paths(OmegaConf.create({"path": "???", "root": str(tmp_path)}))  # unset: the run names the key


def test_composed_defaults_pass_and_a_new_top_level_key_is_refused() -> None:
    check_values(compose_config([], conf=CONF))
    with pytest.raises(ConfigError, match="unknown_key: adds a top-level key nothing reads"):
        compose_config(["+unknown_key=1"], conf=CONF)
    assert compose_config(["+trainer.gradient_clip_val=1.0"], conf=CONF).trainer.gradient_clip_val == 1.0
    assert without_sweeps(["optimizer.lr=0.1,0.01", "backbone=mlp", "seed=range(3)"]) == ["backbone=mlp"]


@pytest.mark.parametrize("key", ["limit_train_batches", "limit_val_batches"])
@pytest.mark.parametrize("limit", [0, 0.0, -1, "all"])
def test_batch_limits_must_leave_something_to_train_and_validate(key, limit) -> None:
    with pytest.raises(ConfigError, match=f"trainer.{key}: must be a positive fraction or number of batches"):
        check_epochs({"max_epochs": 1, key: limit})
    check_epochs({"max_epochs": 1, key: 0.5})
    check_epochs({"max_epochs": 1, key: 3})


def test_a_folder_that_takes_no_file_is_refused_naming_the_key(tmp_path) -> None:
    check_writable(tmp_path / "outputs" / "2026", "hydra.run.dir", "a folder")  # created later, under a writable one
    with pytest.raises(ConfigError, match=r"hydra.run.dir: /proc/x/outputs cannot be created: /proc is not writable"):
        check_writable(Path("/proc/x/outputs"), "hydra.run.dir", "a folder")
