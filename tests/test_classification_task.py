"""The classification task end to end on the bundled digits: non-default losses, multi-task, metrics, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from labline.core.errors import ConfigError
from labline.models.task import TaskContext, build_task
from labline.runs.lightning_run import train_and_test
from testroot import ROOT

SHORT = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
         "+trainer.limit_test_batches=2", "threads=1", "trainer.enable_progress_bar=false", "logger.experiment_name=tests"]
METRICS = {"test/acc", "test/f1_macro", "test/loss", "test/f1_micro", "test/precision_macro", "test/recall_macro",
           "test/acc_top5", "test/auroc_macro", "test/ap_macro"}


@pytest.fixture(scope="module")
def module_store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture(autouse=True)
def isolated_store(module_store, monkeypatch):
    """This module's runs share one MLflow store (creating a store per run costs seconds), still never the project's."""
    monkeypatch.setenv("LABLINE_PROJECT_ROOT", str(module_store))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return module_store


@pytest.mark.parametrize("overrides", [["loss=focal"], ["loss=label_smoothing"], ["loss=bce", "backbone=mlp"],
                                       ["experiment=digits_multitask"]],
                         ids=["focal", "label_smoothing", "bce", "multitask"])
def test_short_training_gives_finite_metrics_and_a_weights_only_checkpoint(compose, tmp_path, overrides: list[str]) -> None:
    result = train_and_test(compose(*overrides, *SHORT), tmp_path, ROOT)
    metrics = {k: v for k, v in result.items() if k.startswith("test/")}
    assert METRICS <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert 0.0 <= metrics["test/acc"] <= metrics["test/acc_top5"] <= 1.0
    curves = (tmp_path / "curves.csv").read_text().splitlines()[0].split(",")
    assert {"train/acc", "train/f1_micro", "val/acc", "val/loss", "val/auroc_macro"} <= set(curves)
    assert "train/auroc_macro" not in curves
    hparams = torch.load(tmp_path / "checkpoints" / "model.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["top_k"] == 5 and hparams["num_classes"] == 10
    assert not {"backbone", "head", "loss", "optimizer"} & set(hparams)
    if "experiment=digits_multitask" in overrides:
        assert {"test/loss_class", "test/loss_parity", "test/loss_high"} <= set(metrics)
        weighted = metrics["test/loss_class"] + 0.5 * metrics["test/loss_parity"] + 0.5 * metrics["test/loss_high"]
        assert metrics["test/loss"] == pytest.approx(weighted, rel=1e-4)


def test_top_k_comes_from_the_task_config(compose) -> None:
    task = build_task(TaskContext(compose("backbone=mlp", "task.top_k=3"), (1, 8, 8), 10))
    assert task.hparams.top_k == 3
    keys = set(task.metrics["val_metrics"].keys(keep_base=False))
    assert "val/acc_top3" in keys and "val/acc_top5" not in keys


@pytest.mark.parametrize(("overrides", "key"), [
    (["loss.weight=[1.0,2.0]"], "loss"),
    (["loss=focal", "loss.alpha=[1.0,1.0,1.0]"], "loss"),
    (["loss=mse", "loss.target=index"], "loss"),
    (["task.top_k=-2"], "task.top_k"),
])
def test_losses_that_cannot_read_the_outputs_fail_before_training(compose, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_task(TaskContext(compose("backbone=mlp", *overrides), (1, 8, 8), 10))
    assert err.value.key == key
    assert "\n" not in str(err.value)
