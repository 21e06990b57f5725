"""A plain Hydra multirun (a grid, no Optuna) nests its jobs' runs under one parent run: FINISHED when every job
did, FAILED when one failed; a multirun refused before any job trained leaves no parent (tests/cluster/
test_slurm_grid.py runs the same grid as SLURM jobs through Hydra's submitit launcher)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e


def _runs(project: Path) -> list:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()], "", max_results=100)


def test_a_grid_nests_under_one_parent_and_a_failed_job_fails_it(project: Path) -> None:
    grid = run_cli(project, "labline", "train", "-m", "task=sklearn,sklearn_nb", "threads=1")
    assert grid.returncode == 0, grid.stderr[-3000:]
    runs = _runs(project)
    (parent,) = [r for r in runs if r.data.tags.get("labline.kind") == "multirun"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["estimator"].rsplit(".", 1)[-1] for r in children) == ["GaussianNB", "KNeighborsClassifier"]
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    assert parent.data.params == {"task": "sklearn,sklearn_nb", "threads": "1"}
    assert parent.data.tags["launcher"] == "BasicLauncher" and len(runs) == 3

    refused = run_cli(project, "labline", "train", "-m", "task=sklearn", "threads=0,1")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "threads" in lines[0], refused.stderr[-2000:]
    assert len(_runs(project)) == 3, "a multirun refused before any run leaves no parent"

    failed = run_cli(project, "labline", "train", "-m", "task=sklearn", "threads=1,0")
    assert failed.returncode == 2, failed.stderr[-2000:]
    runs = _runs(project)
    (parent,) = [r for r in runs if r.data.tags.get("labline.kind") == "multirun" and r.data.params["threads"] == "1,0"]
    assert parent.info.status == "FAILED" and "exit 2" in parent.data.tags["failure_reason"]
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert child.info.status == "FINISHED" and child.data.tags["torch_threads"] == "1"
    assert all(r.info.status != "RUNNING" for r in runs)
