"""`make results` pieces in a fresh copy: a row re-measured through DVC gives the committed numbers exactly, the
rendered README cell is what its MLflow runs recorded, and a code change marks the row stale until re-measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

from labline.reporting.results_doc import STALE

pytestmark = pytest.mark.e2e
ROW = "kmeans"  # a scikit-learn row: seconds to measure


def _row_line(project: Path) -> str:
    (line,) = [x for x in (project / "README.md").read_text().splitlines() if x.startswith("| k-means (k=10)")]
    return line


def test_a_row_remeasured_by_dvc_repeats_its_numbers_and_a_code_change_marks_it_stale(project: Path) -> None:
    metrics = project / "pipelines" / "results" / "metrics" / f"{ROW}.json"
    committed = json.loads(metrics.read_text())
    checked = run_cli(project, "labline", "docs", "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    metrics.unlink()
    repro = run_cli(project, "dvc", "repro", f"pipelines/results/dvc.yaml:row@{ROW}", timeout=600)
    assert repro.returncode == 0, repro.stdout[-2000:] + repro.stderr[-2000:]
    again = json.loads(metrics.read_text())
    assert again["values"] == committed["values"], "fixed seeds: the same numbers exactly"

    # re-rendered, the README cell shows what the new MLflow run recorded, measured on this code: not stale
    assert run_cli(project, "labline", "docs").returncode == 0
    assert STALE not in _row_line(project)
    (run_id,) = again["run_ids"]["kmeans"]
    recorded = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(run_id).data.metrics
    assert f"{recorded['test/ari']:.3f} / {recorded['test/nmi']:.3f} / {recorded['test/matched_acc']:.3f}" in _row_line(project)

    # edit the code a row depends on: the committed table is now out of date, and `labline docs` says so
    with (project / "src" / "labline" / "__init__.py").open("a") as fh:
        fh.write("# an edit\n")
    checked = run_cli(project, "labline", "docs", "--check")
    assert checked.returncode == 2 and "README.md" in checked.stderr and "labline docs" in checked.stderr
    assert run_cli(project, "labline", "docs").returncode == 0
    assert STALE in _row_line(project)


def test_an_ablation_row_records_the_studys_table_and_every_runs_value(project: Path) -> None:
    """A row that is one ablation study (here the seconds-long `tiny` one): the metrics file holds the study's own
    table and the value of every run as MLflow has it; measured again, it trains again under a new parent (the
    code may have changed since the runs of the first measurement finished)."""
    spec = project / "pipelines" / "results" / "results.yaml"
    spec.write_text(spec.read_text().replace("rows:\n", "rows:\n  ablation_tiny:\n    ablation: [ablation=tiny, seeds=1]\n", 1))
    measured = [run_cli(project, "labline", "measure", "ablation_tiny", timeout=600) for _ in range(2)]
    assert all(m.returncode == 0 for m in measured), measured[-1].stdout[-2000:] + measured[-1].stderr[-2000:]
    record = json.loads((project / "pipelines" / "results" / "metrics" / "ablation_tiny.json").read_text())
    assert record["command"] == "labline ablate ablation=tiny seeds=1 threads=1 trainer.enable_progress_bar=false"
    assert record["table"].startswith("**Ablation `tiny`** (leave_one_out)") and "| no_dropout | dropout | 1 |" in record["table"]
    assert set(record["values"]) == {"full", "no_dropout", "no_batch_norm"}
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for variant, (run_id,) in record["run_ids"].items():
        assert record["values"][variant]["test/acc"] == [client.get_run(run_id).data.metrics["test/acc"]]
    parents = client.search_runs([client.get_experiment_by_name("results").experiment_id],
                                 "tags.role = 'ablation' and tags.ablation = 'tiny'")
    assert len(parents) == 2, "each measurement is a study of its own"
