"""DVC experiments that run outside the workspace (`dvc exp run --temp`, and `--queue` then `--run-all`, which
run in a temporary copy or a queue worker's) record their training in the project's own MLflow store: the
README promises it, and both must find the project, not the temporary folder they run in."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e

TINY = ["-S", "trainer.max_epochs=1", "-S", "threads=1", "-S", "trainer.enable_progress_bar=false"]


def _dvc_runs(project: Path) -> dict[str, str]:
    """seed -> status of each run the DVC pipeline recorded in the project's store."""
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.pipeline = 'dvc'")
    return {r.data.params["seed"]: r.info.status for r in runs}


def test_temp_and_queued_experiments_record_in_the_projects_store(project: Path) -> None:
    temp = run_cli(project, "dvc", "exp", "run", "--temp", *TINY, "-S", "seed=11", timeout=900)
    assert temp.returncode == 0, temp.stdout[-3000:] + temp.stderr[-3000:]
    queued = run_cli(project, "dvc", "exp", "run", "--queue", *TINY, "-S", "seed=12")
    assert queued.returncode == 0, queued.stdout[-3000:] + queued.stderr[-3000:]
    assert _dvc_runs(project) == {"11": "FINISHED"}, "queued, not yet run"
    ran = run_cli(project, "dvc", "exp", "run", "--run-all", timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    status = run_cli(project, "dvc", "queue", "status")
    assert status.returncode == 0 and "Failed" not in status.stdout, status.stdout

    assert _dvc_runs(project) == {"11": "FINISHED", "12": "FINISHED"}
    shown = run_cli(project, "dvc", "exp", "show", "--json")
    assert shown.returncode == 0 and '"seed": 12' in shown.stdout.replace("'", '"'), shown.stdout[-2000:]
