"""The DVC pipeline's trust guarantees in project copies of their own: an interrupted `dvc repro` resumes training,
and data that differs from what dvc.lock recorded is refused before any MLflow run exists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from project_copy import BIN, copy_project, project_env, run_cli

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=5", "threads=1", "+trainer.limit_train_batches=6", "callbacks=none"]


def _runs(project: Path) -> list:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture(scope="module")
def params(project: Path) -> Path:
    assert run_cli(project, "labline", "params", *TINY).returncode == 0
    return project / "params.yaml"


def _wait_for_epoch(curves: Path, epochs: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "dvc repro ended before it could be interrupted"
        if curves.exists() and len(curves.read_text().splitlines()) > epochs and \
                any((curves.parent / "checkpoints").glob("*.ckpt")):
            return
        time.sleep(0.05)
    raise AssertionError("training did not reach the epoch in time")


def test_a_killed_dvc_repro_resumes_training_into_the_same_run(tmp_path: Path) -> None:
    # its own copy: it needs a pipeline with nothing reproduced yet, whichever test ran before
    project = copy_project(tmp_path)
    assert run_cli(project, "labline", "params", *TINY).returncode == 0
    proc = subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=project, env=project_env(project), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for_epoch(project / "models" / "curves.csv", 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage's labline process, as a lost node would
    proc.wait(timeout=60)
    (killed,) = _runs(project)
    assert killed.info.status == "RUNNING"

    again = run_cli(project, "dvc", "repro", timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resuming" in again.stdout, "the train stage picked up its checkpoint"
    (run,) = _runs(project)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    resumed = json.loads((project / "reports" / "metrics.json").read_text())

    fresh = run_cli(project, "dvc", "repro", "--force", "train", "evaluate", timeout=600)
    assert fresh.returncode == 0, fresh.stdout[-2000:] + fresh.stderr[-2000:]
    assert "resuming" not in fresh.stdout
    assert json.loads((project / "reports" / "metrics.json").read_text()) == resumed, "as if never interrupted"


@pytest.mark.parametrize(("target", "command"), [("data/processed/digits.npz", ("labline", "stage", "train")),
                                                 ("data/processed/digits.npz", ("labline", "train", *TINY)),
                                                 ("data/splits/digits/val.txt", ("labline", "stage", "train"))])
def test_tampered_data_is_refused_before_any_run(project: Path, params: Path, target: str, command: tuple) -> None:
    if not (project / "dvc.lock").exists() or not (project / target).exists():
        done = run_cli(project, "dvc", "repro", "preprocess", timeout=600)  # the data stages: nothing to train
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    path = project / target
    original = path.read_bytes()
    before = {r.info.run_id for r in _runs(project)}
    if path.suffix == ".npz":  # a valid file with other values, as an edit by hand or a stage run outside DVC gives
        arrays = dict(np.load(path))
        arrays["x"] = arrays["x"] + 1.0
        np.savez(path, **arrays)
    else:
        path.write_bytes(original + b"0\n")
    try:
        result = run_cli(project, *command)
    finally:
        path.write_bytes(original)
    assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-1000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("labline: error:")]
    folder = str(Path(target).parent.parent if target.startswith("data/splits") else Path(target).parent)
    assert len(lines) == 1 and f"{folder}: content hash" in lines[0] and "dvc.lock" in lines[0], result.stderr
    assert {r.info.run_id for r in _runs(project)} == before, "no MLflow run was created"
