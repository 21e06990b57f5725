"""`labline reproduce` through the real CLI in a committed project copy: identical metrics read back from both runs,
and every kind of drift (code commit, dirty tree, data) refused in one line unless --allow-drift, which records it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=2", "+trainer.limit_train_batches=4", "threads=1", "trainer.enable_progress_bar=false"]


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def _runs(project: Path) -> list:
    client = _client(project)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _train(project: Path, *args: str) -> str:
    done = run_cli(project, "labline", "train", *args, "hydra.run.dir=outputs/reproduce-source")
    assert done.returncode == 0, done.stderr[-2000:]
    return re.findall(r"[0-9a-f]{32}", (project / "outputs" / "reproduce-source" / "run.json").read_text())[0]


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=project, check=True,
                   capture_output=True)


def _refused(project: Path, run_id: str, needle: str) -> None:
    before = {r.info.run_id for r in _runs(project)}
    done = run_cli(project, "labline", "reproduce", run_id)
    assert done.returncode == 2, done.stdout[-1000:] + done.stderr[-1000:]
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("labline: error: reproduce:") and needle in errors[0], done.stderr
    assert {r.info.run_id for r in _runs(project)} == before, "a refused reproduction creates no run"


@pytest.mark.parametrize("task", ["classification", "sklearn"])
def test_reproduce_gives_the_recorded_metrics_read_from_both_runs(project: Path, task: str) -> None:
    source = _train(project, f"task={task}", *TINY)
    done = run_cli(project, "labline", "reproduce", source)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "metrics identical to the recorded run" in done.stdout
    assert re.search(r"test/acc\s+│\s+\d\.\d{6}\s+│\s+\d\.\d{6}\s+│\s+yes", done.stdout), "recorded vs new table"
    new_id = re.search(r"new run ([0-9a-f]{32})", done.stdout).group(1)
    client = _client(project)
    old, new = client.get_run(source), client.get_run(new_id)
    assert new.data.tags["reproduced_from"] == source and new.data.tags["drift"] == "none"
    assert new.info.status == "FINISHED"
    compared = {k for k in old.data.metrics if k.startswith("test/")}
    assert compared and {k: new.data.metrics[k] for k in compared} == {k: old.data.metrics[k] for k in compared}
    machine = {k: v for k, v in old.data.tags.items() if k.startswith("machine.")}
    assert machine.keys() == {"machine.cpu", "machine.cpu_capability"} and all(machine.values())
    assert new.data.tags["machine_drift"] == "none" and "another machine" not in done.stdout


def test_a_run_recorded_on_another_cpu_is_reproduced_with_a_note_not_refused(project: Path) -> None:
    source = _train(project, *TINY)
    client = _client(project)
    here = client.get_run(source).data.tags["machine.cpu_capability"]
    client.set_tag(source, "machine.cpu_capability", "ZARCH")  # what another CPU records: not drift one can undo
    done = run_cli(project, "labline", "reproduce", source)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"recorded on another machine (cpu_capability ZARCH -> {here})" in " ".join(done.stdout.split())
    new_id = re.search(r"new run ([0-9a-f]{32})", done.stdout).group(1)
    assert client.get_run(new_id).data.tags["machine_drift"] == f"cpu_capability ZARCH -> {here}"


def _write_data(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(120, 1, 4, 4)).astype(np.float32), y=np.arange(120) % 3)


def test_each_kind_of_drift_is_refused_and_allow_drift_records_it(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "mine.npz"  # outside the repository: changing it changes neither the commit nor the tree
    _write_data(data, 0)
    source = _train(project, "data=npz", f"data.source.path={data}", "backbone=mlp", *TINY)

    _write_data(data, 1)
    _refused(project, source, "data md5")
    _write_data(data, 0)
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nan uncommitted edit\n")
    _refused(project, source, "working tree has uncommitted changes")
    _git(project, "commit", "-qam", "edit")
    _refused(project, source, "code commit")

    _write_data(data, 1)
    allowed = run_cli(project, "labline", "reproduce", source, "--allow-drift")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "metrics differ from the recorded run" in allowed.stdout, "other data, other metrics"
    new_id = re.search(r"new run ([0-9a-f]{32})", allowed.stdout).group(1)
    drift = _client(project).get_run(new_id).data.tags["drift"]
    assert "code commit" in drift and "data md5" in drift


def test_an_unknown_run_is_one_line(project: Path) -> None:
    done = run_cli(project, "labline", "reproduce", "0" * 32)
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        f"labline: error: run_id: no MLflow run '{'0' * 32}' in sqlite:///{project / 'mlflow.db'} "
        "(valid: a run id from `labline runs` or `make ui`)"]
