"""k-fold training in-process: one parent, one child per fold, the aggregate on the parent, refit, resume."""

from __future__ import annotations

import statistics

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT
from labline.crossval import refit_config
from labline.errors import ConfigError
from labline.tracking.store import tracking_uri
from labline.training import train_job

TINY = ["backbone=mlp", "callbacks=none", "trainer.max_epochs=2", "+trainer.limit_train_batches=3", "threads=1",
        "trainer.enable_progress_bar=false", "logger.experiment_name=cv", "split=kfold", "split.k=3"]


def _children(client: MlflowClient, parent_id: str) -> list:
    experiment = client.get_experiment_by_name("cv").experiment_id
    return client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def _best(client: MlflowClient, run, key: str = "val/acc") -> float:
    step = int(run.data.tags["best_epoch"])
    return next(m.value for m in client.get_metric_history(run.info.run_id, key) if m.step == step)


def test_three_folds_then_refit_log_children_and_the_fold_aggregate(compose, tmp_path) -> None:
    result = train_job(compose(*TINY, "split.refit=true"), tmp_path, ROOT)
    client = MlflowClient(tracking_uri())
    parent = client.get_run(result["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["role"] == "crossval"
    children = _children(client, parent.info.run_id)
    folds = sorted((c for c in children if c.data.tags["fold"] != "all"), key=lambda c: c.data.tags["fold"])
    (refit,) = [c for c in children if c.data.tags["fold"] == "all"]
    assert [c.data.tags["fold"] for c in folds] == ["0", "1", "2"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.params["split.fold"] for c in folds}) == 3 and refit.data.params["split.fold"] == "all"
    values = [_best(client, c) for c in folds]
    metrics = parent.data.metrics
    assert metrics["val/acc_mean"] == pytest.approx(statistics.mean(values))
    assert metrics["val/acc_std"] == pytest.approx(statistics.stdev(values))
    assert result["best_value"] == pytest.approx(statistics.mean(values)), "a sweep optimises the mean fold score"
    assert not any(k.startswith("test_") for c in folds for k in c.data.metrics), "with refit the folds never see the test set"
    epochs = round(statistics.mean(int(c.data.tags["best_epoch"]) for c in folds) + 1)
    assert metrics["refit_epochs"] == epochs and refit.data.params["trainer.max_epochs"] == str(epochs)
    assert metrics["refit_test_accuracy"] == refit.data.metrics["test_accuracy"] == result["test_accuracy"]
    assert parent.data.tags["refit_run_id"] == refit.info.run_id


def test_an_interrupted_cross_validation_resumes_without_retraining_finished_folds(compose, tmp_path) -> None:
    cfg = compose(*TINY, "seed=3")
    first = train_job(cfg, tmp_path / "a", ROOT)
    client = MlflowClient(tracking_uri())
    children = _children(client, first["run_id"])
    assert all("test_accuracy" in c.data.metrics for c in children), "without refit each fold model is tested"
    assert first["test_accuracy"] == pytest.approx(statistics.mean(c.data.metrics["test_accuracy"] for c in children))
    # as if the process had died while fold 1 trained: the parent is not finished and fold 1 did not finish
    lost = next(c for c in children if c.data.tags["fold"] == "1")
    client.set_terminated(lost.info.run_id, "FAILED")
    client.set_terminated(first["run_id"], "KILLED")
    second = train_job(cfg, tmp_path / "b", ROOT)
    assert second["run_id"] == first["run_id"], "the unfinished parent is re-opened"
    after = _children(client, first["run_id"])
    assert len(after) == 4
    finished = [c for c in after if c.info.status == "FINISHED"]
    assert sorted(c.data.tags["fold"] for c in finished) == ["0", "1", "2"]
    kept = {c.info.run_id for c in children} - {lost.info.run_id}
    assert kept <= {c.info.run_id for c in finished}, "folds 0 and 2 were not trained again"
    assert client.get_run(first["run_id"]).info.status == "FINISHED"
    third = train_job(cfg, tmp_path / "c", ROOT)
    assert third["run_id"] != first["run_id"], "a finished cross-validation is not re-opened: running it again trains again"


def test_refit_drops_validation_callbacks_and_rejects_a_scheduler_that_watches_validation(compose) -> None:
    cfg = refit_config(compose("split=kfold", "callbacks=ema"), 7)
    assert cfg.callbacks.early_stopping is None and cfg.callbacks.ema is not None
    assert cfg.trainer.max_epochs == 7 and cfg.split.fold == "all"
    with pytest.raises(ConfigError, match="split.refit: the scheduler watches val/loss"):
        refit_config(compose("split=kfold", "scheduler=plateau"), 3)
