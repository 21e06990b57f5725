"""The real DVC pipeline on a tiny config in a fresh project copy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=2", "threads=1"]


def _commit(project: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", message], cwd=project,
                   check=True)


def _baseline(project: Path) -> None:
    """Back to the first repro's workspace: a `dvc exp run` leaves its params, lock and outputs there, and these tests
    run in any order. git restores params.yaml and dvc.lock, DVC's cache the outputs they name."""
    subprocess.run(["git", "reset", "-q", "--hard", "baseline"], cwd=project, check=True)
    checkout = run_cli(project, "dvc", "checkout", "--force", "dvc.yaml")  # the default pipeline; pipelines/ never ran
    assert checkout.returncode == 0, checkout.stderr[-2000:]


@pytest.fixture(scope="module")
def repro(project: Path) -> SimpleNamespace:
    """The first `dvc repro` and what it left, read at once: later tests (`dvc exp run`) change the workspace."""
    from labline.data.pipeline import arrays_md5

    assert run_cli(project, "labline", "params", *TINY).returncode == 0
    result = run_cli(project, "dvc", "repro", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = project / "reports"
    _commit(project, "baseline")
    subprocess.run(["git", "tag", "baseline"], cwd=project, check=True)
    return SimpleNamespace(stdout=result.stdout, run_id=json.loads((project / "models" / "run.json").read_text())["run_id"],
                           metrics=json.loads((reports / "metrics.json").read_text()),
                           matrix=json.loads((reports / "confusion_matrix.json").read_text())["matrix"],
                           curves=(reports / "curves.csv").read_text().splitlines(),
                           data_md5=arrays_md5(*(np.load(project / "data" / "processed" / "digits.npz")[k] for k in "xy")),
                           lock=yaml.safe_load((project / "dvc.lock").read_text()))


def test_repro_runs_every_stage_and_writes_metrics(project: Path, repro: SimpleNamespace) -> None:
    for stage in ("prepare", "split", "preprocess", "train", "evaluate"):
        assert f"Running stage '{stage}'" in repro.stdout, stage
    assert 0.5 < repro.metrics["test/acc"] <= 1.0 and 0.0 < repro.metrics["test/f1_macro"] <= 1.0
    assert sum(map(sum, repro.matrix)) == 360, "the 20% test split of 1797 digits"
    assert repro.curves[0].startswith("epoch,") and len(repro.curves) == 3


def test_split_is_disjoint_stratified_60_20_20(project: Path, repro: SimpleNamespace) -> None:
    parts = {p: np.loadtxt(project / "data" / "splits" / "digits" / f"{p}.txt", dtype=int) for p in ("train", "val", "test")}
    assert [len(parts[p]) for p in ("train", "val", "test")] == [1077, 360, 360]
    assert len(set(parts["train"]) | set(parts["val"]) | set(parts["test"])) == 1797
    y = np.load(project / "data" / "raw" / "digits.npz")["y"]
    for part in parts.values():
        counts = np.bincount(y[part], minlength=10) / len(part)
        assert np.abs(counts - np.bincount(y, minlength=10) / len(y)).max() < 0.01


def test_one_mlflow_run_holds_training_and_test(project: Path, repro: SimpleNamespace) -> None:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(repro.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/acc"] == repro.metrics["test/acc"], "evaluate tested the run train made"
    assert "val/acc" in run.data.metrics
    assert run.data.tags["pipeline"] == "dvc"
    assert run.info.run_name == "dvc-digits-cnn-adam-seed0", "a DVC run is told apart from an ad-hoc one by its name"
    assert run.data.tags["mlflow.note.content"] == "Made by: `labline stage train`"
    processed = next(d for d in repro.lock["stages"]["train"]["deps"] if d["path"] == "data/processed")
    assert processed["md5"], "dvc.lock records the data hash"
    assert run.data.tags["data_md5"] == repro.data_md5, "the run records the md5 of the exact arrays it read"


def test_exp_and_metrics_show_fit_the_default_pipeline(project: Path, repro: SimpleNamespace) -> None:
    shown = run_cli(project, "dvc", "exp", "show", "--csv")
    assert shown.returncode == 0, shown.stderr
    columns = shown.stdout.splitlines()[0].split(",")
    # columns of another file's params or metrics are named FILE:KEY (dependencies only by their path)
    other = [c for c in columns if ":" in c and c.startswith("pipelines/")]
    assert not other, f"the other pipelines' params and metrics stay out of the default view: {other[:5]}"
    assert "test/acc" in columns and "optimizer._target_" in columns
    metrics = run_cli(project, "dvc", "metrics", "show")
    assert metrics.returncode == 0 and "failed" not in (metrics.stdout + metrics.stderr).lower(), metrics.stderr
    assert "reports/metrics.json" in metrics.stdout


def test_second_repro_does_nothing(project: Path, repro: SimpleNamespace) -> None:
    _baseline(project)
    result = run_cli(project, "dvc", "repro")
    assert result.returncode == 0
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


def test_exp_run_with_a_shift_reruns_only_evaluate_and_adds_its_metrics(project: Path, repro: SimpleNamespace) -> None:
    """`shift` is a parameter of the evaluate stage only: the same model, scored also under label shift."""
    _baseline(project)
    result = run_cli(project, "dvc", "exp", "run", "-S", "shift=[label]", *(f"-S{o}" for o in TINY), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Running stage 'evaluate'" in result.stdout and "Running stage 'train'" not in result.stdout
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["test/acc"] == repro.metrics["test/acc"]
    assert metrics["test/shift/clean/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert 0.0 <= metrics["test/shift/label/alpha0.1_0/acc"] <= 1.0 and "test/shift/label/acc_corrected" in metrics


def test_exp_run_with_hydra_override_reruns_only_train_and_evaluate(project: Path, repro: SimpleNamespace) -> None:
    _baseline(project)
    result = run_cli(project, "dvc", "exp", "run", "-S", "optimizer=sgd", "-S", "trainer.max_epochs=2", "-S", "threads=1",
                     timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("prepare", "split", "preprocess"):
        assert f"Running stage '{stage}'" not in result.stdout, stage
    assert "Running stage 'train'" in result.stdout and "Running stage 'evaluate'" in result.stdout
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["optimizer"]["_target_"] == "torch.optim.SGD", "DVC composed conf/ with the override"
    shown = run_cli(project, "dvc", "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "torch.optim.SGD" in text and "test/acc" in text


def test_exp_changing_preprocessing_reruns_from_preprocess(project: Path, repro: SimpleNamespace) -> None:
    _baseline(project)
    result = run_cli(project, "dvc", "exp", "run", "-S", "preprocess=minmax", "-S", "trainer.max_epochs=2", "-S", "threads=1",
                     timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Running stage 'preprocess'" in result.stdout and "Running stage 'train'" in result.stdout
    assert "Running stage 'split'" not in result.stdout
