"""k-fold training in-process: one parent, one child per fold, the aggregate on the parent, refit, resume; scikit-learn
tasks the same way; the DVC train stage cross-validating and refitting, and evaluate testing the refit."""

from __future__ import annotations

import statistics

import pytest
from mlflow.tracking import MlflowClient

from labline.core.errors import ConfigError
from labline.job import train_job
from labline.studies.crossval import refit_config
from labline.tracking.store import tracking_uri
from testroot import ROOT

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
    assert not any(k.startswith("test/") for c in folds for k in c.data.metrics), "with refit the folds never see the test set"
    epochs = round(statistics.mean(int(c.data.tags["best_epoch"]) for c in folds))  # best epochs count from 1
    assert metrics["refit_epochs"] == epochs and refit.data.params["trainer.max_epochs"] == str(epochs)
    assert metrics["refit/test/acc"] == refit.data.metrics["test/acc"] == result["test/acc"]
    assert parent.data.tags["refit_run_id"] == refit.info.run_id


def test_an_interrupted_cross_validation_resumes_without_retraining_finished_folds(compose, tmp_path) -> None:
    cfg = compose(*TINY, "seed=3")
    first = train_job(cfg, tmp_path / "a", ROOT)
    client = MlflowClient(tracking_uri())
    children = _children(client, first["run_id"])
    assert all("test/acc" in c.data.metrics for c in children), "without refit each fold model is tested"
    assert first["test/acc"] == pytest.approx(statistics.mean(c.data.metrics["test/acc"] for c in children))
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


KNN = ["task=sklearn", "threads=1", "logger.experiment_name=cv", "split=kfold", "split.k=3"]


def test_a_scikit_learn_task_cross_validates_like_a_network(compose, tmp_path) -> None:
    result = train_job(compose(*KNN), tmp_path, ROOT)
    client = MlflowClient(tracking_uri())
    parent = client.get_run(result["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["role"] == "crossval"
    assert parent.info.run_name.startswith("digits-KNeighborsClassifier-seed0-kfold3")
    children = sorted(_children(client, parent.info.run_id), key=lambda c: c.data.tags["fold"])
    assert [c.data.tags["fold"] for c in children] == ["0", "1", "2"]
    assert all(c.info.status == "FINISHED" and c.data.tags["estimator"].endswith("KNeighborsClassifier") for c in children)
    val = [c.data.metrics["val/acc"] for c in children]
    test = [c.data.metrics["test/acc"] for c in children]
    assert len(set(val)) > 1, "each fold validates on its own part"
    metrics = parent.data.metrics
    assert metrics["val/acc_mean"] == pytest.approx(statistics.mean(val)) == result["best_value"]
    assert metrics["val/acc_std"] == pytest.approx(statistics.stdev(val))
    assert metrics["test/acc_mean"] == pytest.approx(statistics.mean(test)) == result["test/acc"]
    assert metrics["folds"] == 3 and 0.9 < metrics["test/acc_mean"] <= 1.0


def test_a_scikit_learn_refit_fits_all_non_test_data_and_only_it_is_tested(compose, tmp_path) -> None:
    result = train_job(compose(*KNN, "split.refit=true"), tmp_path, ROOT)
    client = MlflowClient(tracking_uri())
    parent = client.get_run(result["run_id"])
    children = _children(client, parent.info.run_id)
    (refit,) = [c for c in children if c.data.tags["fold"] == "all"]
    folds = [c for c in children if c.data.tags["fold"] != "all"]
    assert len(folds) == 3 and not any(k.startswith("test/") for c in folds for k in c.data.metrics)
    assert refit.data.params["split.fold"] == "all" and "val/acc" not in refit.data.metrics, "nothing left to validate on"
    assert parent.data.metrics["refit/test/acc"] == refit.data.metrics["test/acc"] == result["test/acc"]
    assert "refit_epochs" not in parent.data.metrics, "a scikit-learn estimator has no epochs"
    assert parent.data.tags["refit_run_id"] == refit.info.run_id == result["refit_run_id"]


def test_dvc_train_stage_cross_validates_then_evaluate_tests_the_refit(compose, tmp_path) -> None:
    import csv
    import json

    from labline.stages import run_stage

    cfg = compose(*TINY, "split.refit=true")
    run_stage("train", cfg, tmp_path)
    models, reports = tmp_path / "models", tmp_path / "reports"
    recorded = json.loads((models / "run.json").read_text())
    client = MlflowClient(tracking_uri())
    parent = client.get_run(recorded["crossval_run_id"])
    refit = client.get_run(recorded["run_id"])
    assert parent.data.tags["refit_run_id"] == refit.info.run_id and refit.data.params["split.fold"] == "all"
    assert (models / recorded["checkpoint"]).is_file() and recorded["checkpoint"].startswith("refit/")
    children = _children(client, parent.info.run_id)
    assert len(children) == 4 and all(r.data.tags["pipeline"] == "dvc" for r in (parent, *children))
    assert not any(k.startswith("test/") for r in children for k in r.data.metrics), "train never tests, evaluate does"
    # dvc plots: the refit has no validation curve, so reports/curves.csv is the folds' mean per epoch
    with open(reports / "curves.csv") as fh:
        mean = list(csv.DictReader(fh))
    folds = []
    for i in range(3):
        with open(models / f"fold_{i}" / "curves.csv") as fh:
            folds.append(list(csv.DictReader(fh)))
    assert [row["epoch"] for row in mean] == ["1", "2"] and all(row["folds"] == "3" for row in mean)
    for key in ("train/loss", "val/loss", "val/acc"):
        assert float(mean[1][key]) == pytest.approx(statistics.mean(float(f[1][key]) for f in folds)), key
    run_stage("evaluate", cfg, tmp_path)
    metrics = json.loads((reports / "metrics.json").read_text())
    assert client.get_run(refit.info.run_id).data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    assert sum(map(sum, json.loads((reports / "confusion_matrix.json").read_text())["matrix"])) == 360, "the 20% test part"


def test_dvc_train_stage_refuses_folds_without_a_refit_before_any_run(compose, tmp_path, isolated_store) -> None:
    from labline.stages import run_stage

    empty = (isolated_store / "mlflow.db").read_bytes()
    with pytest.raises(ConfigError) as info:
        run_stage("train", compose(*TINY), tmp_path)
    assert str(info.value).startswith("split.refit: a kfold split trains one model per fold and none on all the data")
    assert "\n" not in str(info.value) and "split.refit=true" in str(info.value)
    assert (isolated_store / "mlflow.db").read_bytes() == empty, "no MLflow run was opened: nothing written to the store"


def test_dvc_train_stage_refuses_a_runner_task_before_any_run(compose, tmp_path, isolated_store) -> None:
    from labline.stages import run_stage

    empty = (isolated_store / "mlflow.db").read_bytes()
    with pytest.raises(ConfigError, match=r"^task: a task run by labline.runs.sklearn_run.run .*labline train task="):
        run_stage("train", compose("task=sklearn_svm"), tmp_path)
    assert (isolated_store / "mlflow.db").read_bytes() == empty
