"""The real `labline train` CLI (Hydra app) in a temporary project copy."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=2", "threads=1", "data.batch_size=128"]


def _runs(project: Path) -> list:
    db = project / "mlflow.db"
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_train_records_a_complete_mlflow_run(project: Path) -> None:
    result = run_cli(project, "labline", "train", "backbone=mlp", "optimizer=sgd", "optimizer.lr=0.05", *TINY,
                     "hydra.run.dir=outputs/cli-complete")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc" in result.stdout
    run_id = json.loads((project / "outputs" / "cli-complete" / "run.json").read_text())["run_id"]
    (run,) = [r for r in _runs(project) if r.info.run_id == run_id]
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.05"
    assert run.data.params["backbone._target_"] == "labline.models.backbones.mlp.MLP"
    assert 0.5 < run.data.metrics["test/acc"] <= 1.0
    tags = run.data.tags
    for key in ("git_commit", "git_dirty", "data_md5", "seed", "best_epoch", "stopped_epoch", "version.torch", "split_hash"):
        assert key in tags, key
    assert tags["git_commit"] != "none" and len(tags["git_commit"]) == 40
    assert tags["stopped_epoch"] == "2"
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert [m.step for m in history] == [1, 2], "curves must be logged per epoch with the epoch (from 1) as step"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "plots", "checkpoints", "curves", "predictions"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/learning_curves.png"}
    config_text = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(project / "dl"))).read_text()
    assert "labline.models.backbones.mlp.MLP" in config_text
    with sqlite3.connect(project / "mlflow.db") as conn:
        assert conn.execute("select count(*) from runs where status='RUNNING'").fetchone()[0] == 0, "no run left RUNNING"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("backbone=resnett", "backbone=resnett"),
        ("optimizer.lrr=0.1", "optimizer.lrr"),
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("optimizer.lr=-1", "optimizer"),
        ("backbone.dropout=1.5", "backbone.dropout"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_no_run(project: Path, override: str, needle: str) -> None:
    before = len(_runs(project))
    key = override.split("=")[0]
    result = run_cli(project, "labline", "train", override, *[t for t in TINY if not t.startswith(key)])
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0] and "Traceback" not in result.stderr
    assert len(_runs(project)) == before, "no MLflow run may be created for a user error"


def test_unknown_option_lists_valid_choices(project: Path) -> None:
    result = run_cli(project, "labline", "train", "backbone=resnett")
    assert result.returncode == 2
    assert "(valid: " in result.stderr and "cnn" in result.stderr.split("(valid: ")[1] and "mlp" in result.stderr


def test_cfg_job_prints_composed_config_without_training(project: Path) -> None:
    result = run_cli(project, "labline", "train", "backbone=mlp", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "labline.models.backbones.mlp.MLP" in result.stdout
    assert "max_epochs: 30" in result.stdout


def test_help_lists_groups_and_options(project: Path) -> None:
    result = run_cli(project, "labline", "train", "--help")
    assert result.returncode == 0
    for group in ("backbone", "optimizer", "loss", "data", "split", "preprocess", "experiment", "trainer", "callbacks"):
        assert f"{group}:" in result.stdout, group
    backbones = next(line for line in result.stdout.splitlines() if line.strip().startswith("backbone:"))
    assert "cnn" in backbones and "mlp" in backbones and "resnet" in backbones, backbones


def test_experiment_config_selects_components(project: Path) -> None:
    result = run_cli(project, "labline", "train", "experiment=digits_mlp", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "labline.models.backbones.mlp.MLP" in result.stdout and "torch.optim.SGD" in result.stdout
