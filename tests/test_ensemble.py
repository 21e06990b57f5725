"""Ensembles: the four combination rules on hand-made probabilities, weights fitted on validation predictions,
and members checked before combining."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from labline.core.errors import ConfigError
from labline.studies.ensemble import Member, Predictions, combine, fit_weights, pixel_scores, run_ensemble, shared_validation
from labline.tracking.store import ensure_experiment, tracking_uri

# Three members, two samples, three classes. Sample 0: two members vote class 0 with little margin, one is sure of
# class 1 (soft voting picks 1, max voting 0). Sample 1: every member picks class 2.
PROBS = np.array([[[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]],
                  [[0.5, 0.4, 0.1], [0.2, 0.1, 0.7]],
                  [[0.0, 1.0, 0.0], [0.3, 0.0, 0.7]]])
# Their validation predictions on four samples: the first member is right on all, the others on half.
VAL_TARGETS = np.array([0, 1, 2, 0])
VAL_PROBS = np.array([[[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.7, 0.2, 0.1]],
                      [[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.1, 0.7, 0.2]],
                      [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]]])


def test_max_voting_follows_the_majority_and_breaks_ties_by_probability() -> None:
    scores = combine(PROBS, "vote")
    assert scores.argmax(1).tolist() == [0, 2]
    assert np.allclose(scores[0], (np.array([2, 1, 0]) + PROBS[:, 0].mean(0)) / 4)
    tie = combine(PROBS[1:], "vote")  # one vote each for classes 0 and 1 on sample 0: the higher mean probability wins
    assert tie[0].argmax() == 1


def test_averaging_and_weighted_averaging() -> None:
    assert np.allclose(combine(PROBS, "average"), PROBS.mean(0))
    assert combine(PROBS, "average").argmax(1).tolist() == [1, 2]
    assert np.allclose(combine(PROBS, "weighted", np.array([2.0, 2.0, 0.0])), PROBS[0] * 0.5 + PROBS[1] * 0.5)
    weighted = combine(PROBS, "weighted", np.array([0.9, 0.8, 0.7]))
    assert np.allclose(weighted, (0.9 * PROBS[0] + 0.8 * PROBS[1] + 0.7 * PROBS[2]) / 2.4)
    with pytest.raises(ConfigError, match="one non-negative weight per member"):
        combine(PROBS, "weighted", np.array([1.0, -1.0, 1.0]))


def test_rank_averaging_ignores_each_members_scale() -> None:
    """A member that squashes its scores counts as much as one that spreads them: only their order matters."""
    sure = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    squashed = np.array([[0.51, 0.49], [0.52, 0.48], [0.50, 0.50]])
    scores = combine(np.stack([sure, squashed]), "rank")
    # class-0 ranks over the 3 samples: sure (3, 2, 1), squashed (2, 3, 1) -> mean / 3 = (5/6, 5/6, 1/3);
    # class-1 ranks: sure (1, 2, 3), squashed (2, 1, 3) -> (1/2, 1/2, 1); each row then sums to 1.
    expected = np.array([[5 / 6, 1 / 2], [5 / 6, 1 / 2], [1 / 3, 1.0]])
    assert np.allclose(scores, expected / expected.sum(1, keepdims=True))
    assert np.allclose(combine(np.stack([sure, sure ** 3]), "rank"), combine(np.stack([sure, sure]), "rank"))


@pytest.mark.parametrize("method", ["vote", "average", "weighted", "rank"])
def test_every_rule_gives_rows_summing_to_one(method: str) -> None:
    assert np.allclose(combine(PROBS, method, np.ones(3)).sum(1), 1.0)


def _log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.mean(np.log(probs[np.arange(len(targets)), targets])))


def test_fitted_weights_minimise_the_validation_log_loss() -> None:
    """The fitted weights satisfy the optimality (KKT) conditions of the convex problem, so no weighting of these
    members has a lower validation log loss; a member that is surely wrong gets no weight, duplicates equal ones."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, size=200)
    sharp, soft = np.full((200, 3), 0.05), np.full((200, 3), 0.3)
    sharp[np.arange(200), targets], soft[np.arange(200), targets] = 0.9, 0.4
    sharp[:40] = np.roll(sharp[:40], 1, axis=1)  # the sharp member is confidently wrong on a fifth of the samples
    wrong = np.roll(sharp, 1, axis=1)
    probs = np.stack([sharp, soft, wrong])
    weights = fit_weights(probs, targets)
    assert weights.sum() == pytest.approx(1.0) and weights[2] < 1e-6 and 0.2 < weights[0] < 0.8
    # d(log loss)/dw_m = -mean_i p_mi / mix_i: equal to -1 for every member with weight, >= -1 for the others
    gradient = -(probs[:, np.arange(200), targets] / (weights @ probs[:, np.arange(200), targets])).mean(1)
    assert np.allclose(gradient[:2], -1.0, atol=1e-4) and gradient[2] >= -1.0
    best = _log_loss(combine(probs, "weighted", weights), targets)
    for other in [np.eye(3)[0], np.eye(3)[1], np.ones(3), *rng.dirichlet(np.ones(3), size=50)]:
        assert best <= _log_loss(combine(probs, "weighted", other), targets) + 1e-9
    twins = fit_weights(np.stack([soft, soft, sharp]), targets)
    assert twins[0] == pytest.approx(twins[1])


def _member(run_id: str, index: list[int] | None) -> Member:
    val = None if index is None else Predictions(PROBS[0][:len(index)], np.array([0, 2][:len(index)]), np.array(index))
    return Member(run_id, run_id, "0", {"split_hash": "abc"}, Predictions(PROBS[0], np.array([0, 2]), np.array([10, 11])), val)


def test_weights_are_fitted_only_on_shared_validation_samples() -> None:
    """Folds of a cross-validation share the test part but not their validation parts: they can be averaged, but
    weights fitted on their validation predictions would mix different samples, so that is refused in one line."""
    same = [_member("a", [1, 2]), _member("b", [1, 2])]
    assert shared_validation(same, required=True)
    folds = [_member("a", [1, 2]), _member("b", [3, 4])]
    assert not shared_validation(folds, required=False)
    with pytest.raises(ConfigError, match="runs a and b saved different validation samples") as err:
        shared_validation(folds, required=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="run b has no predictions/val.npz"):
        shared_validation([_member("a", [1, 2]), _member("b", None)], required=True)
    assert not shared_validation([_member("a", [1, 2]), _member("b", None)], required=False)


@pytest.mark.parametrize(("method", "metric", "weights", "message"),
                         [("average", None, "val", "--weights: --method average takes no weights"),
                          ("weighted", "val/acc", "val", "--metric: --weights val fits the weights"),
                          ("weighted", None, "best", "--weights: unknown weighting 'best'"),
                          ("weighted", None, "metric", "--metric: .*or --weights val")])
def test_weighting_options_are_checked_first(tmp_path, method: str, metric: str | None, weights: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_ensemble(["a", "b"], None, method, metric, tmp_path, weights=weights)


def _finished_run(tmp: Path, probs: np.ndarray, split_hash: str, val_acc: float, val_probs: np.ndarray | None = None) -> str:
    """A finished run as labline records it: split hash tag, validation metric, predictions/test.npz and, when
    given, predictions/val.npz."""
    uri, experiment_id = ensure_experiment("unit")
    mlflow.set_tracking_uri(uri)  # this test logs its runs with the fluent API
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"split_hash": split_hash, "dataset": "toy"})
        mlflow.log_metric("val/acc", val_acc)
        folder = tmp / run.info.run_id
        folder.mkdir()
        np.savez(folder / "test.npz", probs=probs, targets=np.array([0, 2]), index=np.array([10, 11]))
        mlflow.log_artifact(str(folder / "test.npz"), "predictions")
        if val_probs is not None:
            np.savez(folder / "val.npz", probs=val_probs, targets=VAL_TARGETS, index=np.arange(len(VAL_TARGETS)))
            mlflow.log_artifact(str(folder / "val.npz"), "predictions")
    return run.info.run_id


def test_ensemble_run_links_its_members(tmp_path) -> None:
    ids = [_finished_run(tmp_path, PROBS[i], "abc", acc, VAL_PROBS[i]) for i, acc in enumerate((0.9, 0.8, 0.7))]
    result = run_ensemble(ids, None, "weighted", "val/acc", tmp_path)
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.data.tags["ensemble_members"] == ",".join(ids) and run.data.tags["split_hash"] == "abc"
    assert run.data.params["method"] == "weighted" and run.data.params["members"] == ",".join(ids)
    assert run.data.params["weights"] == "[0.9, 0.8, 0.7]"
    # the confident third member outweighs the two others on sample 0: an ensemble can lose to its best member
    assert run.data.metrics["test/acc"] == 0.5 and run.data.metrics["members_best_test_accuracy"] == 1.0
    assert (tmp_path / "outputs").exists()
    assert {"val/acc", "val/loss"} <= set(run.data.metrics)  # every member saved the same validation samples
    found = run_ensemble([], "tags.dataset = 'toy'", "average", None, tmp_path)
    assert MlflowClient(tracking_uri()).get_run(found["run_id"]).data.tags["ensemble_members"].split(",") == ids
    # Fitted on validation, the weights go to the first member, the only one right on every validation sample, so the
    # ensemble is right on both test samples where the metric-weighted one was not.
    fitted = run_ensemble(ids, None, "weighted", None, tmp_path, weights="val")
    run = MlflowClient(tracking_uri()).get_run(fitted["run_id"])
    weights = json.loads(run.data.params["weights"])
    assert run.data.params["weights_from"] == "val" and weights[0] > 0.99 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert fitted["test/acc"] == 1.0 and fitted["val/acc"] == 1.0
    assert fitted["val/loss"] <= _log_loss(VAL_PROBS.mean(0), VAL_TARGETS)
    saved = MlflowClient(tracking_uri()).download_artifacts(fitted["run_id"], "predictions/val.npz", str(tmp_path / "dl"))
    with np.load(saved) as val:
        assert np.allclose(val["probs"], combine(VAL_PROBS, "weighted", np.array(weights)), atol=1e-5)
        assert val["index"].tolist() == list(range(len(VAL_TARGETS)))


def test_members_tested_on_different_splits_are_refused(tmp_path) -> None:
    first, second = _finished_run(tmp_path, PROBS[0], "abc", 0.9), _finished_run(tmp_path, PROBS[1], "xyz", 0.9)
    with pytest.raises(ConfigError, match=f"runs {first} and {second} were tested on different splits") as err:
        run_ensemble([first, second], None, "average", None, tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="at least 2 runs"):
        run_ensemble([first], None, "average", None, tmp_path)
    with pytest.raises(ConfigError, match="--metric"):
        run_ensemble([first, second], None, "weighted", None, tmp_path)


# Masks: one 2x2 scene, classes bg, a, b and c (c absent from every mask: left out of the means). Target
# [[bg, a], [b, b]]; member A predicts [[bg, a], [a, b]], member B [[bg, bg], [b, b]]; where they disagree the
# other is more sure, so their average is the target.
CLASSES = ["bg", "a", "b", "c"]
MASK_TARGET = np.array([[[0, 1], [2, 2]]])
MASK_PIXELS = {"A": [[0.8, 0.1, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0], [0.1, 0.6, 0.3, 0.0], [0.1, 0.1, 0.8, 0.0]],
               "B": [[0.8, 0.1, 0.1, 0.0], [0.6, 0.3, 0.1, 0.0], [0.1, 0.1, 0.8, 0.0], [0.1, 0.1, 0.8, 0.0]]}


def _mask_probs(member: str) -> np.ndarray:
    """``(1, K, 2, 2)``, as a segmentation run saves them."""
    return np.moveaxis(np.array(MASK_PIXELS[member]).reshape(1, 2, 2, 4), -1, 1)


def test_mask_probabilities_become_pixel_rows_and_back() -> None:
    saved = Predictions.saved(_mask_probs("A"), MASK_TARGET, np.array([7]))
    assert saved.mask_shape == (2, 2) and saved.probs.shape == (4, 4) and saved.targets.tolist() == [0, 1, 2, 2]
    assert np.allclose(saved.probs, MASK_PIXELS["A"])  # row-major pixels, classes last
    probs, targets, index = saved.to_save()
    assert np.array_equal(probs, _mask_probs("A")) and np.array_equal(targets, MASK_TARGET) and index.tolist() == [7]


def test_mask_scores_by_hand() -> None:
    """A: bg IoU 1 (Dice 1), a 1/2 (2/3), b 1/2 (2/3); B: bg 1/2 (2/3), a 0 (0), b 1 (1); c absent from both."""
    scores = {m: pixel_scores(Predictions.saved(_mask_probs(m), MASK_TARGET, np.array([0])), CLASSES) for m in "AB"}
    assert scores["A"]["pixel_acc"] == pytest.approx(3 / 4) and scores["B"]["pixel_acc"] == pytest.approx(3 / 4)
    assert scores["A"]["miou"] == pytest.approx(2 / 3) and scores["A"]["dice"] == pytest.approx(7 / 9)
    assert scores["B"]["miou"] == pytest.approx(1 / 2) and scores["B"]["dice"] == pytest.approx(5 / 9)
    assert scores["B"]["iou_a"] == 0.0 and "iou_c" not in scores["B"]
    mean = combine(np.stack([Predictions.saved(_mask_probs(m), MASK_TARGET, np.array([0])).probs for m in "AB"]), "average")
    assert mean.argmax(1).tolist() == [0, 1, 2, 2]


def _mask_run(tmp: Path, member: str, task: str = "labline.models.segmentation.SegmentationTask",
              val_miou: float = 0.5) -> str:
    uri, experiment_id = ensure_experiment("unit-masks")
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"split_hash": "masks"})
        mlflow.log_metric("val/miou", val_miou)
        mlflow.log_param("task._target_", task)
        folder = tmp / run.info.run_id
        folder.mkdir()
        np.savez(folder / "test.npz", probs=_mask_probs(member).astype(np.float16), targets=MASK_TARGET, index=np.array([0]))
        mlflow.log_artifact(str(folder / "test.npz"), "predictions")
        mlflow.log_dict([{"class": name} for name in CLASSES], "test/class_iou.json")
    return run.info.run_id


def test_an_ensemble_of_masks_averages_pixels_and_scores_them_as_segmentation(tmp_path) -> None:
    ids = [_mask_run(tmp_path, m) for m in "AB"]
    result = run_ensemble(ids, None, "average", None, tmp_path)
    assert result["headline"] == "test/miou"
    assert result["test/miou"] == result["test/dice"] == result["test/pixel_acc"] == pytest.approx(1.0)
    assert result["members_best_test_miou"] == pytest.approx(2 / 3, abs=1e-3)  # float16 files: scores, not probabilities
    assert result["members_mean_test_miou"] == pytest.approx(7 / 12, abs=1e-3)
    assert {"test/iou_bg", "test/iou_a", "test/iou_b"} <= set(result) and "test/iou_c" not in result
    client = MlflowClient(tracking_uri())
    saved = client.download_artifacts(result["run_id"], "predictions/test.npz", str(tmp_path / "dl"))
    with np.load(saved) as test:
        assert test["probs"].shape == (1, 4, 2, 2) and np.array_equal(test["targets"], MASK_TARGET)
        assert np.allclose(test["probs"], (_mask_probs("A") + _mask_probs("B")) / 2, atol=1e-3)
    assert not client.list_artifacts(result["run_id"], "plots"), "no confusion matrix of scenes"
    # max voting per pixel: A and B split on two pixels, each tie goes to the higher mean probability, the target's
    assert run_ensemble(ids, None, "vote", None, tmp_path)["test/miou"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="--method: rank ranks samples"):
        run_ensemble(ids, None, "rank", None, tmp_path)


def test_masks_and_class_rows_never_mix(tmp_path) -> None:
    masks, classes = _mask_run(tmp_path, "A"), _finished_run(tmp_path, PROBS[0], "masks", 0.9)
    with pytest.raises(ConfigError, match=f"run {masks} \\(SegmentationTask, masks\\) and run {classes} "
                       "\\(unknown task, classes\\).*all segmentation runs or all classification runs") as err:
        run_ensemble([masks, classes], None, "average", None, tmp_path)
    assert "\n" not in str(err.value)


def test_weighted_masks_follow_the_heavier_member_pixel_by_pixel(tmp_path) -> None:
    """Weights 3:1 by val/miou: (3A + B) / 4 per pixel is A's mask (mIoU 2/3); 1:3 gives B's (1/2); the average is
    the target (1)."""
    a_heavy = [_mask_run(tmp_path, "A", val_miou=0.75), _mask_run(tmp_path, "B", val_miou=0.25)]
    b_heavy = [_mask_run(tmp_path, "A", val_miou=0.25), _mask_run(tmp_path, "B", val_miou=0.75)]
    assert run_ensemble(a_heavy, None, "weighted", "val/miou", tmp_path)["test/miou"] == pytest.approx(2 / 3)
    assert run_ensemble(b_heavy, None, "weighted", "val/miou", tmp_path)["test/miou"] == pytest.approx(1 / 2)
    run_id = run_ensemble(b_heavy, None, "weighted", "val/miou", tmp_path)["run_id"]
    saved = MlflowClient(tracking_uri()).download_artifacts(run_id, "ensemble.json", str(tmp_path / "w"))
    assert [m["weight"] for m in json.loads(Path(saved).read_text())["members"]] == pytest.approx([0.25, 0.75])


def test_an_ensemble_of_mask_ensembles_keeps_the_class_names(tmp_path) -> None:
    inner = run_ensemble([_mask_run(tmp_path, m) for m in "AB"], None, "average", None, tmp_path)["run_id"]
    client = MlflowClient(tracking_uri())
    table = json.loads(Path(client.download_artifacts(inner, "test/class_iou.json", str(tmp_path / "t"))).read_text())
    assert [r["class"] for r in table] == CLASSES and [r["iou"] for r in table] == [1.0, 1.0, 1.0, None]
    outer = run_ensemble([inner, _mask_run(tmp_path, "A")], None, "average", None, tmp_path)
    assert {"test/iou_bg", "test/iou_a", "test/iou_b"} <= set(outer) and not any(k.startswith("test/iou_0") for k in outer)
    classes = _finished_run(tmp_path, PROBS[0], "masks", 0.9)
    with pytest.raises(ConfigError, match=f"run {inner} \\(ensemble, masks\\)"):
        run_ensemble([inner, classes], None, "average", None, tmp_path)
