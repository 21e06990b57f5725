"""`labline ensemble` over tiny segmentation runs through the real CLI: mask probabilities averaged, scored as a
segmentation run is, and never mixed with a classifier's predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "threads=1",
        "trainer.enable_progress_bar=false"]
SCENES = ["experiment=segmentation_scenes", "++data.source.n=60"]


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def _all_run_ids(project: Path) -> set[str]:
    client = _client(project)
    return {r.info.run_id for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}


def _train(project: Path, experiment: str, *overrides: str) -> str:
    """One finished run in the MLflow experiment ``experiment``; its run id."""
    before = _all_run_ids(project)
    result = run_cli(project, "labline", "train", *overrides, *TINY, f"logger.experiment_name={experiment}")
    assert result.returncode == 0, result.stderr[-3000:]
    (new,) = _all_run_ids(project) - before
    return new


def _masks(client: MlflowClient, run_id: str, folder: Path) -> dict[str, np.ndarray]:
    with np.load(client.download_artifacts(run_id, "predictions/test.npz", str(folder / run_id))) as npz:
        return {k: npz[k] for k in npz.files}


def _scores(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Pixel accuracy, mIoU and mean Dice over the classes present in the prediction or the target, by hand."""
    pred = probs.argmax(1)
    iou, dice = [], []
    for k in range(probs.shape[1]):
        p, t = pred == k, targets == k
        if p.any() or t.any():
            iou.append((p & t).sum() / (p | t).sum())
            dice.append(2 * (p & t).sum() / (p.sum() + t.sum()))
    return {"pixel_acc": float((pred == targets).mean()), "miou": float(np.mean(iou)), "dice": float(np.mean(dice))}


@pytest.fixture(scope="module")
def members(project: Path) -> list[str]:
    """Two seeds of the tiny segmentation run, shared by the tests below (each training is a process start)."""
    return [_train(project, "seg-members", *SCENES, f"seed={seed}") for seed in (0, 1)]


def test_two_seeds_ensemble_their_mask_probabilities(project: Path, members: list[str]) -> None:
    before = _all_run_ids(project)
    client = _client(project)
    saved = [_masks(client, run_id, project / "dl") for run_id in members]
    for run_id, masks in zip(members, saved, strict=True):
        assert masks["probs"].dtype == np.float16 and masks["probs"].ndim == 4 and masks["probs"].shape[2:] == (32, 32)
        assert masks["targets"].shape == (len(masks["index"]), 32, 32)
        own = _scores(masks["probs"].astype(np.float64), masks["targets"])
        assert own["miou"] == pytest.approx(client.get_run(run_id).data.metrics["test/miou"], abs=5e-3)
    result = run_cli(project, "labline", "ensemble", *members, "--method", "average")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/miou" in result.stdout
    (ensemble_id,) = _all_run_ids(project) - before
    ensemble = client.get_run(ensemble_id)
    assert ensemble.info.experiment_id == client.get_run(members[0]).info.experiment_id, "beside its members"
    assert ensemble.data.tags["ensemble_members"] == ",".join(members)
    mean = (saved[0]["probs"].astype(np.float64) + saved[1]["probs"].astype(np.float64)) / 2
    expected = _scores(mean, saved[0]["targets"])
    for key, value in expected.items():
        assert ensemble.data.metrics[f"test/{key}"] == pytest.approx(value, abs=1e-6), key
    member_miou = [_scores(m["probs"].astype(np.float64), m["targets"])["miou"] for m in saved]
    assert ensemble.data.metrics["members_best_test_miou"] == pytest.approx(max(member_miou), abs=1e-6)
    assert {"val/miou", "val/dice", "val/pixel_acc"} <= set(ensemble.data.metrics), "the seeds share their val scenes"
    combined = _masks(client, ensemble_id, project / "dl")
    assert np.allclose(combined["probs"].astype(np.float64), mean, atol=1e-3)


def test_a_segmentation_run_and_a_classifier_do_not_ensemble(project: Path, members: list[str]) -> None:
    masks = members[0]
    classes = _train(project, "seg-mixed")
    before = _all_run_ids(project)
    result = run_cli(project, "labline", "ensemble", masks, classes)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, lines
    assert f"run {masks} (SegmentationTask, masks) and run {classes} (ClassificationTask, classes)" in lines[0]
    assert "all segmentation runs or all classification runs" in lines[0]
    assert _all_run_ids(project) == before, "nothing written"


def test_reproduce_of_a_segmentation_run_gives_identical_test_metrics(project: Path, members: list[str]) -> None:
    source = members[1]
    before = _all_run_ids(project)
    done = run_cli(project, "labline", "reproduce", source)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "metrics identical to the recorded run" in done.stdout
    (new_id,) = _all_run_ids(project) - before
    old, new = (_client(project).get_run(run_id).data.metrics for run_id in (source, new_id))
    compared = {k for k in old if k.startswith("test/")}
    assert {"test/miou", "test/dice", "test/pixel_acc"} <= compared
    assert {k: new[k] for k in compared} == {k: old[k] for k in compared}


def test_a_tiny_ablation_of_the_dice_term(project: Path) -> None:
    """ablation=tiny reshaped on the command line: the segmentation experiment, ce_dice vs cross-entropy alone."""
    study = ["ablation=tiny", "name=segmentation_dice", "experiment=segmentation_scenes", "overrides=[]",
             "components.dice_term=[loss=cross_entropy]", "components=[dice_term]", "seeds=1", "metric=test/miou",
             "++data.source.n=60", *TINY]
    result = run_cli(project, "labline", "ablate", *study, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (project / "reports" / "ablation" / "segmentation_dice" / "table.csv").read_text().splitlines()
    assert table[0].startswith("variant") and [row.split(",")[0] for row in table[1:]] == ["full", "no_dice_term"]
    client = _client(project)
    runs = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()],
                                          "tags.ablation = 'segmentation_dice'") if "ablation_variant" in r.data.tags]
    losses = {r.data.tags["ablation_variant"]: r.data.params["loss._target_"].rsplit(".", 1)[-1] for r in runs}
    assert losses == {"full": "WeightedSum", "no_dice_term": "TorchLoss"}, losses
    assert all(r.data.params["task._target_"].endswith("SegmentationTask") and "test/miou" in r.data.metrics for r in runs)
