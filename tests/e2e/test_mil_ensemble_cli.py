"""The real CLI in a temporary project copy: a reduced MIL experiment, and `labline ensemble` over finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e

QUIET = ["threads=1", "trainer.enable_progress_bar=false"]


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def _latest_run(project: Path):
    client = _client(project)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["attributes.start_time DESC"],
                              max_results=1)
    return runs[0]


def test_reduced_mil_experiment_records_bag_metrics_and_attention(project: Path) -> None:
    result = run_cli(project, "labline", "train", "experiment=mil_digits", "trainer.max_epochs=1", "data.bags.train_bags=10",
                     "data.bags.val_bags=10", "data.bags.test_bags=20", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _latest_run(project)
    assert run.info.status == "FINISHED"
    assert {"test_accuracy", "test_auc", "val/auc"} <= set(run.data.metrics)
    assert run.data.params["head._target_"] == "labline.models.mil.AttentionPooling"
    client = _client(project)
    files = {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert {"test/attention.json", "test/attention_bags.png", "test/bag_predictions.npz"} <= files
    records = json.loads(Path(client.download_artifacts(run.info.run_id, "test/attention.json", str(project / "dl"))).read_text())
    assert len(records) == 20
    for bag in records:
        assert sum(i["weight"] for i in bag["instances"]) == pytest.approx(1.0, abs=1e-4)
        assert bag["label"] == ("has 9" if any(i["class"] == "9" for i in bag["instances"]) else "no 9")


def test_ensemble_of_two_finished_runs_and_a_split_mismatch(project: Path) -> None:
    # One process, four runs: two estimators on each of two preprocessings (a preprocessing changes the split hash).
    result = run_cli(project, "labline", "train", "-m", "task=sklearn,sklearn_nb", "preprocess=zscore,minmax", "threads=1")
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(project)
    runs = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()]) if "estimator" in r.data.tags]
    ids = {(r.data.tags["estimator"].rsplit(".", 1)[-1], r.data.params["preprocess._target_"].rsplit(".", 1)[-1]): r.info.run_id
           for r in runs}
    members = [ids[("KNeighborsClassifier", "ZScore")], ids[("GaussianNB", "ZScore")]]
    other_split = ids[("KNeighborsClassifier", "MinMax")]
    result = run_cli(project, "labline", "ensemble", *members, "--method", "weighted", "--metric", "val/acc")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ensemble run" in result.stdout
    run = _latest_run(project)
    assert run.data.tags["ensemble_members"] == ",".join(members) and run.data.params["method"] == "weighted"
    assert 0.5 < run.data.metrics["test_accuracy"] <= 1.0
    assert "predictions" in {a.path for a in client.list_artifacts(run.info.run_id)}
    mismatch = run_cli(project, "labline", "ensemble", members[0], other_split)
    assert mismatch.returncode == 2
    lines = [line for line in mismatch.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and members[0] in lines[0] and other_split in lines[0] and "different splits" in lines[0]
