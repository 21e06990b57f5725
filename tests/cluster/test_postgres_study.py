"""Studies on a real PostgreSQL: the budget lock held in the database, and a SIGKILLed worker's trial retried.

- Many processes share one study through labline's own budget loop: exactly ``n_trials`` finish
  (``benches/coordination.py`` with the lock; without it the same race overshoots, see docs/cluster.md).
- A real sweep with two worker processes on ``postgresql://`` (the plain URL: psycopg 3 is labline's driver)
  tracking to the MLflow server: one worker is SIGKILLed mid-trial, the other fails the trial by heartbeat,
  its MLflow run ends KILLED, Optuna's retry continues from the killed trial's checkpoint, and the study
  still finishes exactly ``n_trials``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from project_copy import BIN
from services import lab_env, load_study

from labline.runs.resume import latest_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))

pytestmark = pytest.mark.e2e
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def test_the_budget_is_exact_across_processes(postgres_lab) -> None:
    from coordination import measure

    result = measure(postgres_lab.database_url("optuna"), None, workers=8, n_trials=40, seconds=0.01, lock="db")
    assert result["finished"] == 40, result
    assert sum(result["per_worker"]) == 40 and len(result["per_worker"]) == 8


def _worker_pids(session: int) -> dict[str, int]:
    """Sweep worker processes of the session by their worker index (their environment says it)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) != session:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if "LABLINE_SWEEP_WORKER" in env:
            found[env["LABLINE_SWEEP_WORKER"]] = int(entry.name)
    return found


def test_a_killed_worker_is_retried_from_its_checkpoint(project: Path, server_lab) -> None:
    storage = f"postgresql://postgres@127.0.0.1:{server_lab.ports.postgres}/optuna"
    study_name = "killed-worker"
    env = lab_env(project, MLFLOW_TRACKING_URI=server_lab.tracking_uri)
    command = [str(BIN / "labline"), "train", "-m", "hparams_search=digits_cnn", "trainer.max_epochs=6",
               "+trainer.limit_train_batches=12", "threads=1", "logger.log_checkpoint=false",
               f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.n_trials=4",
               "hydra.sweeper.n_jobs=2", "hydra.sweeper.heartbeat_interval=2", "hydra.sweeper.pruner.name=none",
               "logger.experiment_name=killed-worker"]
    session = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and session.poll() is None:
            time.sleep(0.3)
            try:
                trials = load_study(study_name, storage).get_trials(deepcopy=False)
            except KeyError:
                continue
            for trial in trials:
                folder = trial.user_attrs.get("run_folder")
                if trial.state == TrialState.RUNNING and folder and latest_checkpoint(Path(folder)) is not None:
                    pid = _worker_pids(session.pid).get(str(trial.user_attrs["worker"]))
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                        killed = trial
                        break
        output, _ = session.communicate(timeout=600)
    finally:
        if session.poll() is None:
            session.kill()
    assert killed is not None, "a trial was killed mid-training"
    assert session.returncode == 0, output[-4000:]

    trials = load_study(study_name, storage).get_trials(deepcopy=False)
    assert sum(t.state in FINISHED for t in trials) == 4, [(t.number, t.state) for t in trials]
    assert trials[killed.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.state in FINISHED and retry.params == killed.params
    client = MlflowClient(server_lab.tracking_uri)
    assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    retried_run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert retried_run.info.status == "FINISHED"
    assert retried_run.data.tags["started_from_checkpoint"].startswith(killed.user_attrs["run_folder"])
