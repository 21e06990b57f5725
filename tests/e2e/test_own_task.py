"""A task added from outside src/labline with one class and one YAML: the README's example, run through the CLI."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from mlflow.tracking import MlflowClient
from project_copy import BIN, ROOT, project_env

pytestmark = pytest.mark.e2e

SECTION = "## Adding a task (learning paradigm)"


def _readme_blocks() -> tuple[str, str]:
    """The section's Python class and YAML file, exactly as the README shows them."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    yaml = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return python, yaml


def test_the_readme_task_trains_tests_and_records_like_a_built_in_one(project) -> None:
    python, yaml = _readme_blocks()
    (project / "mytasks").mkdir()
    (project / "mytasks" / "__init__.py").write_text("")
    (project / "mytasks" / "cosine.py").write_text(python)
    (project / "conf" / "task" / "cosine.yaml").write_text(yaml)
    env = {**project_env(project), "PYTHONPATH": str(project)}
    done = subprocess.run([str(BIN / "labline"), "train", "task=cosine", "backbone=mlp", "trainer.max_epochs=3",
                           "trainer.enable_progress_bar=false", "threads=1", "hydra.run.dir=outputs/own-task"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((project / "outputs" / "own-task" / "run.json").read_text())
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["task._target_"] == "mytasks.cosine.CosineClassifier"
    assert run.data.metrics["test/acc"] > 0.5, "three epochs of an MLP on digits learn something"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "predictions")}
    assert artifacts == {"predictions/test.npz", "predictions/val.npz"}, "per-sample predictions, as for any classifier"
    assert int(run.data.tags["model.params"]) > 0 and run.data.tags["split_hash"]
    assert (project / "outputs" / "own-task" / "checkpoints" / "model.ckpt").is_file()


def test_a_task_that_does_not_derive_from_task_is_refused_in_one_line(project) -> None:
    (project / "conf" / "task" / "notatask.yaml").write_text("_target_: torch.nn.Linear\nin_features: 2\nout_features: 2\n")
    done = subprocess.run([str(BIN / "labline"), "train", "task=notatask", "trainer.max_epochs=1"], cwd=project,
                          env=project_env(project), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("labline: error:")]
    assert len(lines) == 1 and "task" in lines[0], done.stderr[-2000:]
