"""Both segmentation experiments, reduced, through the real CLI in a project copy: MLflow runs, metrics, artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from project_copy import run_cli

pytestmark = pytest.mark.e2e

REDUCED = ["trainer.max_epochs=2", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "++data.source.n=120",
           "threads=1", "trainer.enable_progress_bar=false"]
CLASSES = ["background", "circle", "square", "triangle", "cross"]


def _runs(project: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_unet_and_fcn_train_and_record_mask_metrics_and_artifacts(project: Path) -> None:
    result = run_cli(project, "labline", "train", "-m", "experiment=segmentation_scenes,segmentation_scenes_fcn", *REDUCED)
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = _runs(project)
    parents = [r for r in runs if r.data.tags.get("labline.kind") == "multirun"]
    assert len(parents) == 1, "the two jobs of the multirun under one parent"
    trainings = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    by_backbone = {r.data.params["backbone._target_"].rsplit(".", 1)[-1]: r for r in trainings}
    assert set(by_backbone) == {"UNet", "FCN"}
    for name, run in by_backbone.items():
        assert run.info.status == "FINISHED", name
        metrics = run.data.metrics
        assert {"test/miou", "test/pixel_acc", "test/dice", "test/loss", "val/miou", "val/pixel_acc"} <= set(metrics)
        assert 0.0 <= metrics["test/miou"] <= 1.0 and 0.0 <= metrics["test/pixel_acc"] <= 1.0
        assert run.data.params["task._target_"] == "labline.models.segmentation.SegmentationTask"
        files = {a.path for a in client.list_artifacts(run.info.run_id, "test")}
        assert {"test/class_iou.json", "test/class_iou.md", "test/masks.png"} <= files, name
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "test/class_iou.json",
                                                          str(project / "dl" / name))).read_text())
        assert [row["class"] for row in table] == CLASSES
        present = [row["iou"] for row in table if row["iou"] is not None]
        assert sum(present) / len(present) == pytest.approx(metrics["test/miou"], abs=1e-5)
        for row in table:
            if row["iou"] is not None:
                assert math.isclose(metrics[f"test/iou_{row['class']}"], row["iou"], abs_tol=1e-5)
        figure = Image.open(client.download_artifacts(run.info.run_id, "test/masks.png", str(project / "dl" / name)))
        assert figure.width > 300 and figure.height > figure.width, "six rows of image / true / predicted mask"
        # per-pixel probabilities for ensembles (float16), but no confusion matrix of "samples"
        assert {a.path for a in client.list_artifacts(run.info.run_id, "predictions")} == {"predictions/test.npz",
                                                                                          "predictions/val.npz"}
        assert not client.list_artifacts(run.info.run_id, "plots/confusion_matrix.png")


def test_a_pooling_backbone_is_one_line_exit_2_before_any_run(project: Path) -> None:
    result = run_cli(project, "labline", "train", "experiment=segmentation_scenes", "backbone=cnn", *REDUCED)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "dense map" in lines[0], lines
    _, runs = _runs(project)
    assert not [r for r in runs if r.data.params.get("backbone._target_") == "labline.models.backbones.cnn.CNN"]



@pytest.fixture(scope="module")
def classifier(project: Path) -> str:
    """The run id of a digits classifier (backbone=cnn, one short epoch) that logged its checkpoint. Digits and
    scenes are both grayscale, and backbone=cnn and the FCN's encoder share their channels [32, 64, 128]."""
    result = run_cli(project, "labline", "train", "run_name=classifier", "trainer.max_epochs=1",
                     "+trainer.limit_train_batches=2", "threads=1", "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = _runs(project)
    (source,) = [r for r in runs if r.info.run_name == "classifier"]
    assert {a.path for a in client.list_artifacts(source.info.run_id, "checkpoints")}, "the classifier logged its checkpoint"
    return source.info.run_id


def test_fcn_starts_from_a_digits_classifier_run_by_its_run_id(project: Path, classifier: str) -> None:
    result = run_cli(project, "labline", "train", "experiment=segmentation_scenes_fcn", "run_name=fcn-from-classifier",
                     f"backbone.weights={classifier}", *REDUCED)
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = _runs(project)
    (run,) = [r for r in runs if r.info.run_name == "fcn-from-classifier"]
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone._target_"] == "labline.models.backbones.fcn.FCN"
    assert run.data.params["backbone.weights"] == classifier, "the run records the weights it started from"
    assert 0.0 <= run.data.metrics["test/miou"] <= 1.0


def test_a_classifier_of_other_widths_is_one_line_exit_2_before_any_run(project: Path, classifier: str) -> None:
    result = run_cli(project, "labline", "train", "experiment=segmentation_scenes_fcn", "run_name=fcn-other-widths",
                     f"backbone.weights={classifier}", "backbone.encoder.channels=[16,32,64]", *REDUCED)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "backbone.weights" in lines[0] and "keys of another shape (e.g. encoder." in lines[0], lines
    _, runs = _runs(project)
    assert not [r for r in runs if r.info.run_name == "fcn-other-widths"]
