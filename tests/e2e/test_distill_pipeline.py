"""The distillation study (`dvc repro pipelines/distill/dvc.yaml`) on one seed and one epoch, in a fresh project copy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e

PIPELINE = Path("pipelines") / "distill"
TINY = ["trainer.max_epochs=1", "threads=1", "trainer.enable_progress_bar=false"]
RUNS = {"teacher": ["experiment=distill_teacher"], "student_seed0": ["experiment=distill_student", "seed=0"],
        "scratch_seed0": ["experiment=distill_student_scratch", "seed=0"]}


@pytest.fixture(scope="module")
def repro(project: Path) -> subprocess.CompletedProcess:
    dvc_yaml = project / PIPELINE / "dvc.yaml"
    spec = dvc_yaml.read_text()
    assert "seeds: [0, 1, 2]" in spec
    dvc_yaml.write_text(spec.replace("seeds: [0, 1, 2]", "seeds: [0]"))
    for name, overrides in RUNS.items():
        made = run_cli(project, "labline", "params", *overrides, *TINY, "--output", str(PIPELINE / "params" / f"{name}.yaml"))
        assert made.returncode == 0, made.stderr
    result = run_cli(project, "dvc", "repro", str(PIPELINE / "dvc.yaml"), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_repro_runs_the_study_and_writes_the_comparison(project: Path, repro: subprocess.CompletedProcess) -> None:
    for stage in ("prepare", "teacher", "student@0", "scratch@0", "evaluate@student-0", "compare"):
        assert f"dvc.yaml:{stage}'" in repro.stdout, stage
    compare = json.loads((project / PIPELINE / "reports" / "compare.json").read_text())
    rows = ("teacher", "student_scratch", "student_distilled")
    for row in rows:
        assert compare[row]["runs"] == 1 and 0.0 <= compare[row]["test/acc"] <= 1.0, row
    assert compare["teacher"]["params"] > 10 * compare["student_distilled"]["params"]
    assert compare["student_distilled"]["params"] == compare["student_scratch"]["params"], "the same student"
    assert compare["student_distilled"]["flops"] == compare["student_scratch"]["flops"]
    table = (project / PIPELINE / "reports" / "compare.md").read_text()
    assert all(f"| {label} |" in table for label in ("teacher", "student from scratch", "distilled student"))


def test_distilled_run_names_its_teacher(project: Path, repro: subprocess.CompletedProcess) -> None:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    assert set(runs) == {"distill_teacher", "distill_student_seed0", "distill_scratch_seed0"}
    teacher_run = json.loads((project / PIPELINE / "models" / "teacher" / "run.json").read_text())["run_id"]
    student = runs["distill_student_seed0"]
    assert student.info.status == "FINISHED" and "test/acc" in student.data.metrics
    assert student.data.tags["distill.teacher_run_id"] == teacher_run == runs["distill_teacher"].info.run_id
    assert student.data.params["task.teacher"] == "pipelines/distill/models/teacher/checkpoints/model.ckpt"
    assert "train/loss_soft" in student.data.metrics and "train/loss_hard" in student.data.metrics
    assert "distill.teacher" not in runs["distill_scratch_seed0"].data.tags


def test_second_repro_is_up_to_date(project: Path, repro: subprocess.CompletedProcess) -> None:
    result = run_cli(project, "dvc", "repro", str(PIPELINE / "dvc.yaml"))
    assert result.returncode == 0, result.stderr
    assert "Running stage" not in result.stdout


def test_params_files_are_tracked_per_stage_as_deps(project: Path, repro: subprocess.CompletedProcess) -> None:
    lock = yaml.safe_load((project / PIPELINE / "dvc.lock").read_text())
    student = lock["stages"]["student@0"]
    assert "params" not in student, "the study's settings stay out of `dvc exp show`"
    assert any(dep["path"] == "params/student_seed0.yaml" for dep in student["deps"]), "a changed params file re-runs it"
    assert any(dep["path"] == "models/teacher" for dep in student["deps"]), "a new teacher re-distils the student"
