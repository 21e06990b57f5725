"""Eight real training processes logging into one brand-new MLflow store at once lose nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import BIN, project_env

pytestmark = pytest.mark.e2e

WORKERS = 8
EPOCHS = 2


def test_eight_processes_share_a_fresh_store_without_loss(project: Path) -> None:
    assert not (project / "mlflow.db").exists()
    procs = [
        subprocess.Popen([str(BIN / "labline"), "train", f"seed={i}", f"trainer.max_epochs={EPOCHS}", "callbacks=none",
                          "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "threads=1", "backbone=mlp",
                          f"run_name=worker{i}"],
                         cwd=project, env=project_env(project), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(WORKERS)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * WORKERS, "\n".join(e[-1500:] for e in errors)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.run_name for r in runs) == sorted(f"worker{i}" for i in range(WORKERS))
    n_params = {len(r.data.params) for r in runs}
    assert len(n_params) == 1 and n_params.pop() > 40, "every run has every param"
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "val/loss", "val/acc"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(1, EPOCHS + 1)), key
        assert "test/acc" in run.data.metrics
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "plots", "checkpoints", "curves"}
        assert run.data.tags["seed"] == run.info.run_name.removeprefix("worker")
