"""Reduced versions of the zero-shot and contrastive experiments, checked in MLflow.

DAP runs as a real ``labline train`` subprocess in a project copy; the others run
in-process through ``train_and_test`` (one import of lightning for all of them).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from mlflow.tracking import MlflowClient
from project_copy import run_cli

from labline.core.errors import ConfigError
from labline.runs.assembly import prepare_run
from labline.runs.context import RunContext
from labline.runs.lightning_run import train_and_test
from labline.tracking.store import tracking_uri

pytestmark = pytest.mark.e2e

REDUCED = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "threads=1", "trainer.enable_progress_bar=false"]
SMALL_SHAPES = ["data.source.per_class=20"]
ZERO_SHOT_METRICS = ("test/acc", "test/gzsl_seen", "test/gzsl_unseen", "test/gzsl_h")


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(autouse=True)
def isolated_store(shared_store: Path, monkeypatch) -> Path:
    """One MLflow store for the in-process runs of this module (creating a store's schema takes seconds);
    each test logs into an experiment of its own and finds its run there."""
    monkeypatch.setenv("LABLINE_PROJECT_ROOT", str(shared_store))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return shared_store


def _only_run(client: MlflowClient, experiment: str = "shapes"):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    return run


def _experiment(request: pytest.FixtureRequest) -> str:
    return "".join(c if c.isalnum() else "_" for c in request.node.name)


def test_dap_zero_shot_through_the_real_cli(project: Path) -> None:
    result = run_cli(project, "labline", "train", "experiment=zeroshot_dap_shapes", *REDUCED, *SMALL_SHAPES)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = _only_run(client)
    assert run.data.params["task.method"] == "dap" and run.data.params["data.name"] == "shapes"
    metrics = run.data.metrics
    assert all(0.0 <= metrics[k] <= 1.0 for k in ZERO_SHOT_METRICS)
    s, u = metrics["test/gzsl_seen"], metrics["test/gzsl_unseen"]
    assert metrics["test/gzsl_h"] == pytest.approx(0.0 if s + u == 0 else 2 * s * u / (s + u), abs=1e-6)
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "test/zeroshot.json", str(project / "dl"))).read_text())
    assert len(report["unseen"]) == 6 and len(report["seen"]) == 18 and not set(report["unseen"]) & set(report["seen"])


class LabelSpy(pl.Callback):
    """Every label the model is trained or validated on."""

    def __init__(self) -> None:
        self.labels: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.labels.append(batch[-1])

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self.labels.append(batch[-1])


def test_compatibility_zero_shot_never_trains_on_unseen_classes(compose, tmp_path, request) -> None:
    spy = LabelSpy()
    name = _experiment(request)
    cfg = compose("experiment=zeroshot_compat_shapes", *REDUCED, *SMALL_SHAPES, f"logger.experiment_name={name}")
    result = train_and_test(cfg, tmp_path / "out", tmp_path, context=RunContext(callbacks=[spy]))
    report = json.loads((tmp_path / "out" / "zeroshot.json").read_text())
    unseen = {report["classes"].index(name) for name in report["unseen"]}
    met = set(torch.cat(spy.labels).tolist())
    assert len(unseen) == 6 and met and not met & unseen
    run = _only_run(MlflowClient(tracking_uri()), name)
    assert run.data.params["task.method"] == "compat"
    assert all(run.data.metrics[k] == pytest.approx(result[k]) for k in ZERO_SHOT_METRICS)


@pytest.mark.parametrize(
    ("experiment", "extra"),
    [("contrastive_supcon_digits", []), ("contrastive_simclr_digits", []), ("contrastive_supcon_digits", ["loss=triplet"])],
    ids=["supcon", "simclr", "triplet"],
)
def test_contrastive_experiments_log_probe_accuracies(compose, tmp_path, request, experiment: str, extra: list[str]) -> None:
    name = _experiment(request)
    cfg = compose(f"experiment={experiment}", *extra, *REDUCED, f"logger.experiment_name={name}")
    result = train_and_test(cfg, tmp_path / "out", tmp_path)
    client = MlflowClient(tracking_uri())
    run = _only_run(client, name)
    metrics = run.data.metrics
    assert 0.5 < metrics["test/linear_probe_acc"] <= 1.0 and 0.5 < metrics["test/knn_acc"] <= 1.0
    assert metrics["test/acc"] == metrics["test/linear_probe_acc"] == pytest.approx(result["test/acc"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [1]
    assert "plots/confusion_matrix.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}


def test_shapes_trains_a_plain_classifier(compose, tmp_path) -> None:
    result = train_and_test(compose("data=shapes", *REDUCED, *SMALL_SHAPES), tmp_path / "out", tmp_path)
    matrix = json.loads((tmp_path / "out" / "confusion_matrix.json").read_text())
    assert len(matrix["classes"]) == 24 and matrix["classes"][0] == "circle|small|filled"
    assert 0.0 <= result["test/acc"] <= 1.0


@pytest.mark.parametrize(
    ("overrides", "key"),
    [(["experiment=zeroshot_compat_shapes", *SMALL_SHAPES, "task.datamodule.unseen_classes=[circle|huge|filled]"],
      "task.datamodule.unseen_classes"),
     (["experiment=zeroshot_compat_shapes", *SMALL_SHAPES, "task.datamodule.unseen_count=24"], "task.datamodule.unseen_count"),
     (["experiment=zeroshot_compat_shapes", *SMALL_SHAPES, "task.temperature=0.0"], "task.temperature"),
     (["experiment=contrastive_simclr_digits", "loss.temperature=-0.5"], "loss.temperature"),
     (["task=contrastive", "loss=nt_xent", "augment=none"], "augment"),
     (["task=contrastive"], "loss")],
)
def test_bad_paradigm_settings_fail_before_training(compose, tmp_path, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        prepare_run(compose(*overrides, "threads=1"), tmp_path, tmp_path)
    assert str(info.value).startswith(f"{key}:") and "\n" not in str(info.value)
