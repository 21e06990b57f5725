"""Data and models on a DVC remote (item e): one `dvc repro` with tiny params, `dvc push` to a shared folder and
to the lab's S3 store (SeaweedFS through dvc-s3); in a fresh clone `dvc pull` then `dvc repro` retrains nothing.
A cluster job in a clone reads the DVC-tracked data it pulled (the processed file's md5 is the run's data_md5),
never recomputes it."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from project_copy import BIN
from services import lab_env, ok, run

from labline.data.pipeline import arrays_md5
from labline.lab.s3 import BUCKET, CREDENTIALS

pytestmark = pytest.mark.e2e
TINY = ["backbone=mlp", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "threads=1",
        "trainer.enable_progress_bar=false"]
UP_TO_DATE = "Data and pipelines are up to date."


def _clone(project: Path, dest: Path, env: dict[str, str], remote: str) -> Path:
    ok(run(project, env, "git", "clone", "-q", str(project), str(dest)))
    pulled = ok(run(dest, env, "dvc", "pull", "-r", remote, "dvc.yaml"))  # the default pipeline's outputs
    assert "data/processed" in pulled.stdout or "added" in pulled.stdout, pulled.stdout
    return dest


def test_push_then_a_fresh_clone_pulls_and_retrains_nothing(project: Path, s3_lab, slurm_lab, tmp_path: Path) -> None:
    env = lab_env(project, **CREDENTIALS, SLURM_CONF=str(slurm_lab.slurm_conf))
    env.pop("MLFLOW_TRACKING_URI", None)
    ok(run(project, env, "labline", "params", *TINY))
    ok(run(project, env, "dvc", "remote", "add", "-d", "shared", str(tmp_path / "shared-remote")))
    ok(run(project, env, "dvc", "remote", "add", "lab", f"s3://{BUCKET}/dvc"))
    ok(run(project, env, "dvc", "remote", "modify", "lab", "endpointurl", s3_lab.s3_endpoint))
    ok(run(project, env, "dvc", "repro", timeout=900))
    ok(run(project, env, "git", "add", "-A"))  # dvc.lock, the outputs' .gitignore files, the uncached reports
    ok(run(project, env, "git", "commit", "-qm", "pipeline run, remotes configured"))
    for remote in ("shared", "lab"):
        pushed = ok(run(project, env, "dvc", "push", "-r", remote))
        assert "pushed" in pushed.stdout, pushed.stdout

    for remote in ("shared", "lab"):
        clone = _clone(project, tmp_path / f"clone-{remote}", env, remote)
        assert (clone / "models").is_dir() and (clone / "data" / "processed").exists()
        again = ok(run(clone, env, "dvc", "repro"))
        assert UP_TO_DATE in again.stdout and "Running stage" not in again.stdout, again.stdout
        assert not (clone / "mlflow.db").exists(), "nothing trained in the clone"

    # a SLURM job in the S3 clone trains on the pulled data: its data_md5 is the pulled processed arrays' md5
    clone = tmp_path / "clone-lab"
    processed = next(p for p in (clone / "data" / "processed").rglob("*.npz"))
    job = f"{shlex.quote(str(BIN / 'labline'))} train {' '.join(TINY)} test_after_fit=false hydra.run.dir=outputs/job"
    batch = subprocess.run(["sbatch", "--wait", "-c", "1", "-t", "10", "-o", str(tmp_path / "job.out"), "--wrap", job],
                           cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert batch.returncode == 0, batch.stderr + (tmp_path / "job.out").read_text()[-3000:]
    run_id = json.loads((clone / "outputs" / "job" / "run.json").read_text())["run_id"]
    tags = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}").get_run(run_id).data.tags
    with np.load(processed) as pulled:  # data_md5 is the processed arrays' md5 (labline.data.pipeline.arrays_md5)
        assert tags["data_md5"] == arrays_md5(pulled["x"], pulled["y"])
    assert tags["slurm_job_id"].isdigit()
