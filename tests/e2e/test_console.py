"""What the terminal and the MLflow run list show, through the real CLI in a project copy: a quiet console (a header,
the progress bar, the metrics table, the run id and its reproduce command), run names a researcher can tell apart,
one experiment per dataset, a description with the command on every run, and a sweep that prints one line per trial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli
from sklearn.datasets import load_digits

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=2", "+trainer.limit_train_batches=3", "threads=1", "logger.log_checkpoint=false"]
NOISE = ("litlogger", "srun", "LeafSpec", "GPU available", "run_callbacks", "Creating initial MLflow database")


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def _run(project: Path, folder: str):  # noqa: ANN202 - an MLflow Run
    run_id = json.loads((project / "outputs" / folder / "run.json").read_text())["run_id"]
    return _client(project).get_run(run_id)


def test_a_training_prints_a_header_its_metrics_and_its_run_id_and_nothing_else(project: Path) -> None:
    result = run_cli(project, "labline", "train", *TINY, "hydra.run.dir=outputs/quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    run = _run(project, "quiet")
    run_id = run.info.run_id
    assert f"run id: {run_id}" in result.stdout and f"labline reproduce {run_id}" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("digits-cnn-adam-seed0: ") and "MLflow experiment 'digits'" in lines[0], lines[0]
    assert "test/acc" in result.stdout, "the metrics table"
    for noise in NOISE:
        assert noise not in out, noise
    assert run.info.run_name == "digits-cnn-adam-seed0"
    assert _client(project).get_experiment(run.info.experiment_id).name == "digits", "one experiment per dataset"
    assert run.data.tags["mlflow.note.content"].startswith("Made by: `labline train trainer.max_epochs=2")
    assert run.data.params["option.optimizer"] == "adam" and run.data.params["option.backbone"] == "cnn"
    metrics = run.data.metrics
    assert {"test/acc", "test/loss", "val/acc", "best/val/acc"} <= set(metrics)
    history = _client(project).get_metric_history(run_id, "val/acc")
    best_epoch = int(run.data.tags["best_epoch"])
    assert metrics["best/val/acc"] == next(m.value for m in history if m.step == best_epoch)


def test_verbose_prints_the_config_tree(project: Path) -> None:
    result = run_cli(project, "labline", "train", *TINY, "verbose=true", "hydra.run.dir=outputs/verbose")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run_callbacks" in result.stdout and "epoch_seed" in result.stdout


def test_runs_are_named_after_the_options_and_the_data_file(project: Path) -> None:
    digits = load_digits()
    x = (digits.images[:400, None] / 16).astype(np.float32)
    np.savez(project / "handwriting.npz", x=x, y=digits.target[:400])
    result = run_cli(project, "labline", "train", "data=npz", "data.source.path=handwriting.npz", "backbone=gru",
                     "optimizer=nesterov", *TINY, "hydra.run.dir=outputs/named")
    assert result.returncode == 0, result.stderr[-3000:]
    run = _run(project, "named")
    assert run.info.run_name == "handwriting-gru-nesterov-seed0", "GRU runs are not RNN, npz data not 'custom'"
    assert run.data.tags["dataset"] == "handwriting"
    assert _client(project).get_experiment(run.info.experiment_id).name == "handwriting"


def test_a_six_trial_sweep_prints_one_line_per_trial_and_a_summary(project: Path) -> None:
    result = run_cli(project, "labline", "train", "-m", "hparams_search=digits_cnn", *TINY, "hydra.sweeper.n_trials=6",
                     "hydra.sweeper.study_name=quiet", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, noise
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert [int(line.split()[1]) for line in trial_lines] == list(range(6))
    assert all(" epoch" in line and line.split()[2] in ("COMPLETE", "PRUNED", "FAIL") for line in trial_lines)
    assert "labline train experiment=quiet_optuna_best" in result.stdout, "best config named per study and storage"
    assert (project / "conf" / "experiment" / "quiet_optuna_best.yaml").exists()

    study = optuna.load_study(study_name="quiet", storage=f"sqlite:///{project / 'optuna.db'}")
    assert study.metric_names == ["best/val/acc"]
    client = _client(project)
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.metrics["best/val/acc"] == pytest.approx(trial.value), "the objective on the trial's run"
        assert run.data.params["option.optimizer"] == trial.params["optimizer"], "the sampled option, not its class"
        assert run.info.run_name == f"quiet-trial-{trial.number}"
