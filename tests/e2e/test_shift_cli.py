"""`labline evaluate RUN_ID shift=...` and `labline train shift=...` through the real CLI, MLflow and DVC-style
metrics files in a project copy: a tiny digits CNN scored under corruptions without retraining, the results in a
nested run (the training run's own metrics untouched), and bad input refused in one line with no run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=1", "threads=1", "data.batch_size=128", "trainer.enable_progress_bar=false"]
PREFIX = "test/shift/corruptions"


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def _runs(project: Path) -> list:
    client = _client(project)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _train(project: Path, folder: str, *args: str) -> str:
    done = run_cli(project, "labline", "train", *TINY, *args, f"hydra.run.dir=outputs/{folder}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((project / "outputs" / folder / "run.json").read_text())["run_id"]


@pytest.fixture(scope="module")
def trained(project: Path) -> str:
    return _train(project, "shift-source")


def test_evaluate_scores_a_finished_run_under_corruptions_in_a_nested_run(project: Path, trained: str) -> None:
    client = _client(project)
    before = client.get_run(trained).data
    done = run_cli(project, "labline", "evaluate", trained, "shift=corruptions")
    assert done.returncode == 0, done.stderr[-3000:]
    (child_id,) = re.findall(r"shift evaluation run ([0-9a-f]{32})", done.stdout)
    child = client.get_run(child_id)
    assert child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == trained and child.data.tags["shift_of"] == trained
    metrics = child.data.metrics
    for corruption in ("gaussian_noise", "gaussian_blur", "contrast", "rotation", "translation"):
        for severity in range(1, 6):
            assert 0.0 <= metrics[f"{PREFIX}/{corruption}/{severity}/acc"] <= 1.0
    # the clean pass is the run's own test: the same weights, data and preprocessing rebuilt from the record
    assert metrics["test/shift/clean/acc"] == pytest.approx(before.metrics["test/acc"], abs=1e-6)
    assert metrics[f"{PREFIX}/drop"] == pytest.approx(metrics["test/shift/clean/acc"] - metrics[f"{PREFIX}/mca"])
    assert metrics[f"{PREFIX}/contrast/5/acc"] < metrics["test/shift/clean/acc"], "severity 5 contrast must cost accuracy"
    artifacts = {a.path for a in client.list_artifacts(child_id, "shift")}
    assert {"shift/corruptions_heatmap.png", "shift/corruptions.md", "shift/corruptions.csv"} <= artifacts
    after = client.get_run(trained).data
    assert after.metrics == before.metrics and after.tags == before.tags, "the training run must not change"
    # the same numbers once more: every draw is seeded
    again = run_cli(project, "labline", "evaluate", trained, "shift=corruptions", "--output", "reports/shift.json")
    assert again.returncode == 0, again.stderr[-3000:]
    written = json.loads((project / "reports" / "shift.json").read_text())
    assert {k: v for k, v in written.items() if k.startswith(PREFIX)} == pytest.approx(
        {k: v for k, v in metrics.items() if k.startswith(PREFIX)}
    )


@pytest.mark.parametrize(
    ("words", "needle"),
    [
        (["0123456789abcdef0123456789abcdef", "shift=corruptions"], "no MLflow run '0123456789abcdef"),
        (["TRAINED", "shift=blurry"], "'blurry' is not an option of group 'shift'"),
        (["TRAINED", "backbone=mlp"], "takes shift=... words only"),
        (["TRAINED", "shift=corruptions", "shift.corruptions.corruptions.contrast.severities=[0.5,-1]"], "severities"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run(project: Path, trained: str, words: list[str], needle: str) -> None:
    before = len(_runs(project))
    done = run_cli(project, "labline", "evaluate", *[trained if w == "TRAINED" else w for w in words])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("labline: error: ") and needle in lines[0], done.stderr[-2000:]
    assert len(_runs(project)) == before, "a refused evaluation must not create an MLflow run"


def test_a_run_that_cannot_be_shifted_is_refused(project: Path) -> None:
    sklearn_run = _train(project, "shift-sklearn", "task=sklearn")
    before = len(_runs(project))
    done = run_cli(project, "labline", "evaluate", sklearn_run, "shift=corruptions")
    assert done.returncode == 2 and "scikit-learn" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    refused = run_cli(project, "labline", "train", *TINY, "task=sklearn", "shift=label")
    assert refused.returncode == 2 and "scikit-learn" in refused.stderr, refused.stderr[-2000:]
    assert len(_runs(project)) == before


def test_a_training_run_with_a_shift_list_reports_it_in_mlflow_and_its_metrics_file(project: Path) -> None:
    run_id = _train(project, "shift-in-training", "shift=[label,cross_dataset]")
    metrics = _client(project).get_run(run_id).data.metrics
    written = json.loads((project / "outputs" / "shift-in-training" / "metrics.json").read_text())
    for key in (
        "test/shift/label/acc",
        "test/shift/label/acc_corrected",
        "test/shift/label/alpha0.1_0/f1_macro",
        "test/shift/cross_dataset/stroke_digits/acc",
        "test/shift/cross_dataset/drop",
    ):
        assert key in metrics and written[key] == pytest.approx(metrics[key])
    assert metrics["test/shift/clean/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
