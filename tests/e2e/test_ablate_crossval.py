"""k-fold cross-validation through the real CLI: `labline train split=kfold split.k=3` and the DVC split stage."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from project_copy import copy_project, run_cli

pytestmark = pytest.mark.e2e

TINY = ["backbone=mlp", "callbacks=none", "trainer.max_epochs=2", "+trainer.limit_train_batches=3", "threads=1"]


def test_three_fold_train_logs_three_children_and_the_aggregate_on_the_parent(project: Path) -> None:
    result = run_cli(project, "labline", "train", "split=kfold", "split.k=3", *TINY, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "cross-validation: 3 folds" in result.stdout
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "")
    (parent,) = [r for r in runs if r.data.tags.get("role") == "crossval"]
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda r: r.data.tags["fold"])
    assert [c.data.tags["fold"] for c in children] == ["0", "1", "2"] and len(runs) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    tests = [c.data.metrics["test/acc"] for c in children]
    assert parent.data.metrics["test/acc_mean"] == pytest.approx(statistics.mean(tests))
    assert parent.data.metrics["test/acc_std"] == pytest.approx(statistics.stdev(tests))
    assert 0.0 < parent.data.metrics["val/acc_std"] and 0.3 < parent.data.metrics["val/acc_mean"] <= 1.0
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "crossval")} == {"crossval/crossval.json"}


def test_split_stage_folds_never_share_samples_and_never_contain_test_samples(tmp_path: Path) -> None:
    # its own copy: the stages rewrite params.yaml and data/ away from dvc.lock, which `labline train` then refuses
    project = copy_project(tmp_path)
    assert run_cli(project, "labline", "params", "split=kfold", "split.k=3").returncode == 0
    for stage in ("prepare", "split", "preprocess"):
        result = run_cli(project, "labline", "stage", stage)
        assert result.returncode == 0, result.stderr[-3000:]
    root = project / "data" / "splits" / "digits"
    folds = [{p: set(np.loadtxt(root / f"fold_{i}" / f"{p}.txt", dtype=int).tolist()) for p in ("train", "val", "test")}
             for i in range(3)]
    test = folds[0]["test"]
    assert len(test) == 360 and all(f["test"] == test for f in folds)
    for i, fold in enumerate(folds):
        assert not fold["train"] & fold["val"] and not (fold["train"] | fold["val"]) & test
        for other in folds[i + 1:]:
            assert not fold["val"] & other["val"], "validation folds never share samples"
    assert set().union(*(f["val"] for f in folds)) == set(range(1797)) - test
    assert sorted(p.name for p in (project / "data" / "processed").glob("digits.fold_*.npz")) == [
        "digits.fold_0.npz", "digits.fold_1.npz", "digits.fold_2.npz", "digits.fold_all.npz"]
