"""Plain Hydra grids as SLURM jobs, and what a run sees inside an allocation, on the real single-node SLURM.

`labline train -m optimizer.lr=0.01,0.1 hydra/launcher=submitit_slurm` (Hydra's submitit launcher): each job is
a SLURM job and a tracked run on the MLflow server, nested under one multirun parent. Inside an allocation a
run's torch threads are capped by the CPUs it was given (SLURM_CPUS_PER_TASK) and Lightning's SLURM detection
leaves labline's output alone: a user error is still one line on stderr, exit 2.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import BIN
from services import lab_env, ok, run

pytestmark = pytest.mark.e2e
TINY = ["backbone=mlp", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "trainer.enable_progress_bar=false"]


def _env(project: Path, lab) -> dict[str, str]:
    """The user's environment, without the test runner's own thread cap: SLURM alone decides the threads here."""
    env = lab_env(project, MLFLOW_TRACKING_URI=lab.tracking_uri, SLURM_CONF=str(lab.slurm_conf))
    env.pop("LABLINE_MAX_THREADS", None)
    return env


def test_a_plain_grid_on_slurm_nests_every_job_under_one_parent(project: Path, server_lab, slurm_lab) -> None:
    ok(run(project, _env(project, server_lab), "labline", "train", "-m", "optimizer.lr=0.01,0.1",
           "hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
           "logger.experiment_name=grid", *TINY, timeout=600))

    client = MlflowClient(server_lab.tracking_uri)
    experiment = client.get_experiment_by_name("grid")
    runs = client.search_runs([experiment.experiment_id], "", max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("labline.kind") == "multirun"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "SlurmLauncher"
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.01", "0.1"] and len(runs) == 3
    assert all(r.info.status == "FINISHED" and "test/acc" in r.data.metrics for r in children)
    assert len({r.data.tags["slurm_job_id"] for r in children}) == 2, "one SLURM job per config"
    # threads=2 in the config, 1 CPU per task from SLURM: the run used (and recorded) 1
    assert {r.data.params["threads"] for r in children} == {"2"}
    assert {r.data.tags["torch_threads"] for r in children} == {"1"}
    stored = server_lab.folder / "mlflow" / "artifacts" / experiment.experiment_id
    assert all((stored / r.info.run_id / "artifacts" / "config.yaml").exists() for r in children)
    assert not (project / "mlflow.db").exists()


# one refused while composing, one where Lightning builds its Trainer (and detects the SLURM environment)
CASES = [(["optimizer.lrr=0.1"], "optimizer.lrr"), (["trainer.precision=17", "trainer.max_epochs=1"], "trainer")]


def test_inside_an_allocation_errors_stay_one_line_and_threads_follow_slurm(project: Path, slurm_lab,
                                                                             tmp_path: Path) -> None:
    """One batch job (SLURM_JOB_ID, SLURM_NTASKS, SLURM_CPUS_PER_TASK=1 set, srun on PATH: what Lightning's SLURM
    detection reads) runs bad commands and one tiny training; each command's stderr goes to its own file."""
    # a store of its own: the grid test asserts that the project's mlflow.db is never made
    env = lab_env(project, SLURM_CONF=str(slurm_lab.slurm_conf), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/alloc.db")
    env.pop("LABLINE_MAX_THREADS", None)
    labline = shlex.quote(str(BIN / "labline"))
    lines = [f"{labline} train {' '.join(words)} 2> {tmp_path}/err{i}; echo $? > {tmp_path}/rc{i}"
             for i, (words, _) in enumerate(CASES)]
    lines.append(f"{labline} train {' '.join(TINY)} test_after_fit=false run_name=in-allocation hydra.run.dir=outputs/alloc"
                 f" > {tmp_path}/train.out 2>&1")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n" + "\n".join(lines) + "\n")
    result = subprocess.run(["sbatch", "--wait", "-c", "1", "-t", "10", "-o", str(tmp_path / "job.out"), str(script)],
                            cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr + (tmp_path / "job.out").read_text()
    for i, (_, needle) in enumerate(CASES):
        err = [line for line in (tmp_path / f"err{i}").read_text().splitlines() if line.strip()]
        assert (tmp_path / f"rc{i}").read_text().strip() == "2", err
        assert len(err) == 1 and err[0].startswith("labline: error: ") and needle in err[0], err
    trained = json.loads((project / "outputs" / "alloc" / "run.json").read_text())["run_id"]
    run_info = MlflowClient(f"sqlite:///{tmp_path}/alloc.db").get_run(trained)
    assert run_info.info.status == "FINISHED", (tmp_path / "train.out").read_text()[-3000:]
    assert run_info.data.tags["torch_threads"] == "1" and run_info.data.tags["slurm_job_id"].isdigit()
    assert "srun" not in (tmp_path / "train.out").read_text(), "Lightning's srun hint is silenced"
