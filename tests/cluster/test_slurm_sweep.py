"""A pruned study on the real stack: two SLURM array workers and one local worker on one PostgreSQL study,
tracking to the MLflow server. Exactly ``n_trials`` finish, every trial is a child run on the server with its
artifacts in the server's store, and the launching command concludes the study (best config, plots, parent).
Then a preempted worker (SLURM's pre-timeout signal, sent with ``scancel --signal=USR2``) checkpoints, is
requeued and resumes its trial into the same MLflow run."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from project_copy import BIN
from services import lab_env, load_study, ok, run

from labline.runs.resume import latest_checkpoint

pytestmark = pytest.mark.e2e
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SLURM = ["hparams_search=digits_cnn", "hydra.sweeper.backend=slurm", "hydra.sweeper.slurm.cpus_per_task=1",
         "hydra.sweeper.slurm.time_min=20"]
SMALL = [*SLURM, "backbone=mlp", "trainer.max_epochs=3", "+trainer.limit_train_batches=3"]


def _env(project: Path, lab) -> dict[str, str]:
    return lab_env(project, MLFLOW_TRACKING_URI=lab.tracking_uri, SLURM_CONF=str(lab.slurm_conf))


def test_a_pruned_study_from_slurm_array_workers_and_a_local_one(project: Path, server_lab, slurm_lab) -> None:
    storage = server_lab.database_url("optuna")
    result = ok(run(project, _env(project, server_lab), "labline", "train", "-m", *SMALL, "hydra.sweeper.n_trials=12",
                    "hydra.sweeper.n_jobs=2", "hydra.sweeper.slurm.local_worker=true", f"hydra.sweeper.storage={storage}",
                    "hydra.sweeper.study_name=slurm12", "logger.experiment_name=slurm12", timeout=900))
    assert "submitted SLURM array" in result.stdout

    trials = load_study("slurm12", storage).get_trials(deepcopy=False)
    assert sum(t.state in FINISHED for t in trials) == 12, [(t.number, t.state.name) for t in trials]
    assert any(t.state == TrialState.PRUNED for t in trials), "the study prunes"
    assert {t.user_attrs["worker"] for t in trials} == {0, 1, 2}, "both array tasks and the local worker ran trials"

    client = MlflowClient(server_lab.tracking_uri)
    experiment = client.get_experiment_by_name("slurm12")
    runs = client.search_runs([experiment.experiment_id], "", max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("labline.kind") == "optuna-study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(trials) and all(r.info.status == "FINISHED" for r in children)
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_complete"] + parent.data.metrics["n_pruned"] == 12
    assert {"optimization_history.png", "intermediate_values.png"} <= {
        Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert (project / "conf" / "experiment").glob("slurm12*_best.yaml")
    stored = server_lab.folder / "mlflow" / "artifacts" / experiment.experiment_id
    for child in children:
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")
        assert (stored / child.info.run_id / "artifacts" / "config.yaml").exists(), "artifacts in the server's store"
    assert not (project / "mlartifacts").exists() and not (project / "mlflow.db").exists()


def _squeue(lab) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True,
                         env={**os.environ, "SLURM_CONF": str(lab.slurm_conf)}).stdout
    return out.split("\n") if out.strip() else []


def test_a_preempted_worker_is_requeued_and_resumes_into_the_same_run(project: Path, server_lab, slurm_lab) -> None:
    storage = server_lab.database_url("optuna")
    env = _env(project, server_lab)
    # the default CNN, long enough to be signalled mid-trial (the lab's SLURM holds a requeued job cred_expire=20 s)
    args = [*SLURM, "trainer.max_epochs=30", "+trainer.limit_train_batches=20", "hydra.sweeper.pruner.name=none",
            "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", "hydra.sweeper.heartbeat_interval=30",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=preempt", "logger.experiment_name=preempt",
            "logger.log_checkpoint=false"]
    session = subprocess.Popen([str(BIN / "labline"), "train", "-m", *args], cwd=project, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    signalled = None
    try:
        deadline = time.monotonic() + 300
        while signalled is None and time.monotonic() < deadline and session.poll() is None:
            time.sleep(0.5)
            try:
                trials = load_study("preempt", storage).get_trials(deepcopy=False)
            except KeyError:
                continue
            if trials and trials[0].state == TrialState.RUNNING and trials[0].intermediate_values:
                job = next(line.split()[0] for line in _squeue(server_lab) if "RUNNING" in line)
                subprocess.run(["scancel", "--signal=USR2", job], check=True,
                               env={**os.environ, "SLURM_CONF": str(slurm_lab.slurm_conf)})
                signalled = trials[0]
        output, _ = session.communicate(timeout=600)
    finally:
        if session.poll() is None:
            session.kill()
    assert signalled is not None, output[-3000:]
    assert session.returncode == 0, output[-4000:]
    (trial,) = load_study("preempt", storage).get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE, "the same trial finished after the requeue"
    client = MlflowClient(server_lab.tracking_uri)
    experiment = client.get_experiment_by_name("preempt")
    runs = [r for r in client.search_runs([experiment.experiment_id], "") if r.data.tags.get("optuna_trial") == "0"]
    assert len(runs) == 1, "resumed into the same MLflow run, not a new one"
    (resumed,) = runs
    assert resumed.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(resumed.info.run_id, "val/loss"))
    assert steps == list(range(1, 31)), "no duplicated or missing epochs across the requeue"
    logs = "".join(p.read_text() for p in (project / "multirun").glob("*/*/slurm/*_log.out"))
    assert "preempted: checkpoint kept, requeueing" in logs and "requeued: continuing trial 0" in logs


def test_a_cancelled_array_task_has_its_trial_retried_from_the_checkpoint(project: Path, server_lab, slurm_lab) -> None:
    """``scancel`` of one array task mid-trial: its run ends KILLED, the trial is retried by the other workers from
    its checkpoint, and the study still finishes exactly ``n_trials``."""
    storage = server_lab.database_url("optuna")
    args = [*SLURM, "trainer.max_epochs=6", "+trainer.limit_train_batches=20", "hydra.sweeper.pruner.name=none",
            "hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=2", "hydra.sweeper.slurm.local_worker=true",
            "hydra.sweeper.heartbeat_interval=3", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=cancel",
            "logger.experiment_name=cancel", "logger.log_checkpoint=false"]
    session = subprocess.Popen([str(BIN / "labline"), "train", "-m", *args], cwd=project, env=_env(project, server_lab),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cancelled = None
    try:
        deadline = time.monotonic() + 300
        while cancelled is None and time.monotonic() < deadline and session.poll() is None:
            time.sleep(0.5)
            try:
                study = load_study("cancel", storage)
            except KeyError:
                continue
            tasks = dict(enumerate(job for _, job in study.user_attrs.get("slurm_array", [])))
            for trial in study.get_trials(deepcopy=False):
                folder = trial.user_attrs.get("run_folder")
                if (trial.state == TrialState.RUNNING and trial.user_attrs.get("worker") in tasks and folder
                        and latest_checkpoint(Path(folder)) is not None):
                    subprocess.run(["scancel", tasks[trial.user_attrs["worker"]]], check=True,
                                   env={**os.environ, "SLURM_CONF": str(slurm_lab.slurm_conf)})
                    cancelled = trial
                    break
        output, _ = session.communicate(timeout=600)
    finally:
        if session.poll() is None:
            session.kill()
    assert cancelled is not None, output[-3000:]
    trials = load_study("cancel", storage).get_trials(deepcopy=False)
    assert sum(t.state in FINISHED for t in trials) == 5, [(t.number, t.state.name) for t in trials]
    assert trials[cancelled.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == cancelled.number]
    assert retry.state in FINISHED and retry.params == cancelled.params
    client = MlflowClient(server_lab.tracking_uri)
    assert client.get_run(cancelled.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    tags = client.get_run(retry.user_attrs["mlflow_run_id"]).data.tags
    assert tags["started_from_checkpoint"].startswith(cancelled.user_attrs["run_folder"])
