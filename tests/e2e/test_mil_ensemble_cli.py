"""The real CLI in a temporary project copy: a reduced MIL experiment, and `labline ensemble` over finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def _predictions(client: MlflowClient, run_id: str, part: str, folder: Path) -> dict[str, np.ndarray]:
    with np.load(client.download_artifacts(run_id, f"predictions/{part}.npz", str(folder / run_id))) as npz:
        return {k: npz[k] for k in npz.files}


def test_reduced_mil_experiment_records_bag_metrics_attention_and_ensembles(project: Path) -> None:
    """Two seeds of a reduced MIL experiment (one process), then `labline ensemble` over them: MIL runs save bag
    probabilities like any classifier, and runs with different seeds share their validation and test bags."""
    result = run_cli(project, "labline", "train", "-m", "experiment=mil_digits", "seed=0,1", "trainer.max_epochs=1",
                     "data.bags.train_bags=10", "data.bags.val_bags=10", "data.bags.test_bags=20", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(project)
    runs = {r.data.tags["seed"]: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
            if r.data.params.get("task._target_") == "labline.models.mil.MILTask"}
    run = runs["0"]
    assert run.info.status == "FINISHED"
    assert {"test/acc", "test/auc", "val/auc"} <= set(run.data.metrics)
    assert run.data.params["head._target_"] == "labline.models.mil.AttentionPooling"
    files = {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert {"test/attention.json", "test/attention_bags.png"} <= files
    records = json.loads(Path(client.download_artifacts(run.info.run_id, "test/attention.json", str(project / "dl"))).read_text())
    assert len(records) == 20
    for bag in records:
        assert sum(i["weight"] for i in bag["instances"]) == pytest.approx(1.0, abs=1e-4)
        assert bag["label"] == ("has 9" if any(i["class"] == "9" for i in bag["instances"]) else "no 9")
    test, val = (_predictions(client, run.info.run_id, part, project / "dl") for part in ("test", "val"))
    assert test["probs"].shape == (20, 2) and val["probs"].shape == (10, 2)
    assert test["index"].tolist() == [bag["bag"] for bag in records]
    assert np.allclose(test["probs"], [bag["probs"] for bag in records], atol=1e-5)
    assert float(np.mean(test["probs"].argmax(1) == test["targets"])) == pytest.approx(run.data.metrics["test/acc"])
    assert val["index"].tolist() == [f"val-{i}" for i in range(10)]
    members = [runs[seed].info.run_id for seed in ("0", "1")]
    result = run_cli(project, "labline", "ensemble", *members, "--method", "average")
    assert result.returncode == 0, result.stderr[-3000:]
    ensemble = _latest_run(project)
    assert ensemble.data.tags["ensemble_members"] == ",".join(members)
    assert {"test/acc", "val/acc", "val/loss"} <= set(ensemble.data.metrics)  # the seeds share their validation bags
    combined = _predictions(client, ensemble.info.run_id, "test", project / "dl")
    seed1 = _predictions(client, members[1], "test", project / "dl")
    assert np.allclose(combined["probs"], (test["probs"] + seed1["probs"]) / 2)
    assert combined["index"].tolist() == test["index"].tolist()


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
    assert 0.5 < run.data.metrics["test/acc"] <= 1.0
    for run_id in (run.info.run_id, *members):  # the ensemble saves validation predictions like its members
        assert {"predictions/test.npz", "predictions/val.npz"} <= {a.path for a in client.list_artifacts(run_id, "predictions")}
    assert {"val/acc", "val/loss"} <= set(run.data.metrics)
    mismatch = run_cli(project, "labline", "ensemble", members[0], other_split)
    assert mismatch.returncode == 2
    lines = [line for line in mismatch.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and members[0] in lines[0] and other_split in lines[0] and "different splits" in lines[0]
