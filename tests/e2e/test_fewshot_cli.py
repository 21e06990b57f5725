"""The few-shot experiments, reduced to seconds: ProtoNets through the real CLI in a project copy, the relation
network and the fine-tuning baseline in-process through ``train_and_test``; each checked in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from project_copy import ROOT, run_cli

from labline.core.config import compose_config
from labline.models.fewshot import EPISODES_FILE
from labline.runs.lightning_run import train_and_test
from labline.tracking.store import tracking_uri

pytestmark = pytest.mark.e2e

# 40 glyph classes: 24 base, 6 validation, 10 novel; 10 samples each fit 1 shot + 5 queries.
REDUCED = ["data.source.classes=40", "data.source.samples=10", "data.source.size=16", "backbone.channels=[16,16]",
           "task.datamodule.query=5", "task.datamodule.train_episodes=4", "task.datamodule.val_episodes=3",
           "task.datamodule.test_episodes=12", "trainer.max_epochs=1", "threads=1", "trainer.enable_progress_bar=false"]


def _check_run(client: MlflowClient, run_id: str, name: str, tmp: Path) -> dict:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == name
    metrics = run.data.metrics
    assert metrics["test/episodes"] == 12 and 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/acc_ci95"] >= 0.0
    assert run.data.params["split.name"] == "classes" and run.data.tags["dataset"] == "glyphs"
    report = json.loads(Path(client.download_artifacts(run_id, f"test/{EPISODES_FILE}", str(tmp))).read_text())
    accuracies = [e["accuracy"] for e in report["per_episode"]]
    assert len(accuracies) == 12 and sum(accuracies) / 12 == pytest.approx(metrics["test/acc"], abs=1e-5)
    assert all(len(e["classes"]) == 5 and e["query"] == 5 for e in report["per_episode"])
    return report


def test_protonet_experiment_through_the_cli(project: Path, tmp_path: Path) -> None:
    result = run_cli(project, "labline", "train", "experiment=fewshot_protonet_glyphs", "task.datamodule.shot=2", *REDUCED)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    report = _check_run(client, run.info.run_id, "fewshot_protonet_glyphs_5way_2shot", tmp_path)
    assert report["method"] == "PrototypicalNetwork" and all(e["shot"] == 2 for e in report["per_episode"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [1]


def test_impossible_episode_exits_2_with_one_line_and_no_run(project: Path) -> None:
    store = project / "mlflow.db"

    def run_ids() -> set[str]:
        if not store.exists():
            return set()
        client = MlflowClient(f"sqlite:///{store}")
        return {r.info.run_id for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}

    before = run_ids()
    result = run_cli(project, "labline", "train", "experiment=fewshot_protonet_glyphs", *REDUCED, "split.val=12",
                     "task.datamodule.way=11")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "task.datamodule.way" in lines[0] and "novel classes" in lines[0], result.stderr
    assert run_ids() == before, "no MLflow run for a refused command"


@pytest.mark.parametrize(("experiment", "method"), [("fewshot_relation_glyphs", "RelationNetwork"),
                                                    ("fewshot_finetune_glyphs", "FineTuneBaseline")])
def test_other_methods_in_process(experiment: str, method: str, tmp_path: Path) -> None:
    cfg = compose_config([f"experiment={experiment}", *REDUCED, "logger.experiment_name=fewshot"], conf=ROOT / "conf")
    result = train_and_test(cfg, tmp_path / "out", tmp_path)
    report = _check_run(MlflowClient(tracking_uri()), result["run_id"], f"{experiment}_5way_1shot", tmp_path / "dl")
    assert report["method"] == method
    checkpoint = torch.load(tmp_path / "out" / "checkpoints" / "model.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["config"]["task"]["_target_"].endswith(method)
