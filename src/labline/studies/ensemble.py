"""``labline ensemble``: combine the test predictions of finished runs, logged as a run of its own.

Every classification run (neural, MIL, scikit-learn, another ensemble) saves its validation
and test probabilities as ``predictions/val.npz`` and ``predictions/test.npz``
(``labline.runs.predictions``); an ensemble reads them back, so no model is rebuilt or re-run.
Combining is only meaningful sample by sample on the same test set: members must carry
equal ``split_hash`` tags (same data, split and preprocessing) and the same test samples,
else the ensemble stops with one line naming the runs. When every member saved validation
predictions of the same samples, the ensemble is scored on them too (``val/`` metrics and
its own ``predictions/val.npz``); members whose validation parts differ (e.g. the folds of
a cross-validation, which share the test part) are still combined, without ``val/`` metrics.

Combination rules, each giving one row of scores per test sample that sums to 1:

- ``vote``: max voting. Each member votes for its top class; scores are
  ``(votes + mean probability) / (members + 1)``, so the most-voted class wins and the
  averaged probabilities only break ties.
- ``average``: the mean of the members' probabilities (soft voting).
- ``weighted``: the weighted mean. ``--weights metric`` (default) weighs each member by its own
  validation metric (``--metric``, higher is better; the value at the epoch whose checkpoint
  was tested). ``--weights val`` fits the weights jointly on the members' validation
  predictions, minimising the validation log loss of the weighted mean (``fit_weights``);
  members must then share their validation samples.
- ``rank``: each member's probabilities for a class are replaced by their ranks over the
  test samples (scaled to (0, 1]), then averaged: members whose scores live on different
  scales (an SVM's Platt scores, a network's softmax) count equally. Made for ranking
  metrics (AUC); across classes of one sample, ranks compare only roughly.

Segmentation runs save per-pixel probabilities ``(N, K, H, W)``: each pixel is then a row, so every rule
above combines masks pixel by pixel (``rank``, a ranking of pixels, is refused). The ensemble is scored as a
segmentation run is (pixel accuracy, mIoU, mean Dice, IoU per class, by ``labline.metrics.masks``), each
member beside it on the same metrics recomputed from its saved file. Masks and class rows never mix: an
ensemble of a segmentation run and a classifier stops with one line naming both.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labline.core.errors import ConfigError
from labline.core.io import load_npz, write_json
from labline.metrics.masks import label_confusion, mask_scores, write_class_table
from labline.metrics.scores import classifier_scores
from labline.reporting.console import console
from labline.runs.predictions import KEYS, artifact, is_masks, log_predictions
from labline.runs.reports import classification_reports
from labline.tracking.lifecycle import open_run
from labline.tracking.store import Store, open_store

METHODS = ("vote", "average", "weighted", "rank")
WEIGHTS = ("metric", "val")
MEMBERS_TAG = "ensemble_members"
MASK_COLUMNS = ("pixel_acc", "miou", "dice")
# A member's probability of the true class is floored here when fitting weights, so one-hot members
# (estimators without predict_proba) cost a large but finite log loss where they are wrong.
PROB_FLOOR = 1e-12


@dataclass
class Predictions:
    """One row of ``probs`` per sample, or per pixel of masks of ``mask_shape`` (H, W): the rules combine rows."""

    probs: np.ndarray
    targets: np.ndarray
    index: np.ndarray
    mask_shape: tuple[int, int] | None = None

    @classmethod
    def saved(cls, probs: np.ndarray, targets: np.ndarray, index: np.ndarray) -> Predictions:
        """From a ``predictions/*.npz``: per-pixel maps ``(N, K, H, W)`` become ``N * H * W`` rows."""
        if not is_masks(probs):
            return cls(probs.astype(np.float64), targets, index)
        classes, height, width = probs.shape[1:]
        rows = np.moveaxis(probs, 1, -1).reshape(-1, classes).astype(np.float64)
        return cls(rows, targets.reshape(-1), index, (height, width))

    def to_save(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probs, targets, index)`` in the layout the members saved (masks back to ``(N, K, H, W)``)."""
        if self.mask_shape is None:
            return self.probs, self.targets, self.index
        shape = (len(self.index), *self.mask_shape)
        return (np.moveaxis(self.probs.reshape(*shape, -1), -1, 1), self.targets.reshape(shape), self.index)


@dataclass
class Member:
    run_id: str
    name: str
    experiment_id: str
    tags: dict[str, str]
    test: Predictions
    val: Predictions | None = None
    weight: float = 1.0
    task: str = "unknown task"


def combine(probs: np.ndarray, method: str, weights: np.ndarray | None = None) -> np.ndarray:
    """``(members, samples, classes)`` probabilities -> ``(samples, classes)`` ensemble scores by ``method``."""
    if method not in METHODS:
        raise ConfigError("--method", f"unknown method '{method}'", METHODS)
    members, samples, classes = probs.shape
    if method == "vote":
        votes = np.eye(classes)[probs.argmax(2)].sum(0)
        return (votes + probs.mean(0)) / (members + 1)
    if method == "rank":
        from scipy.stats import rankdata

        ranks = (rankdata(probs, axis=1) / samples).mean(0)
        return ranks / ranks.sum(1, keepdims=True)
    if method == "weighted":
        if weights is None or len(weights) != members or np.any(weights < 0) or weights.sum() <= 0:
            raise ConfigError("--metric", "weighted averaging needs one non-negative weight per member, not all zero")
        return np.tensordot(weights / weights.sum(), probs, axes=1)
    return probs.mean(0)


def fit_weights(probs: np.ndarray, targets: np.ndarray, tol: float = 1e-9, max_iter: int = 10_000) -> np.ndarray:
    """Weights on the simplex minimising the log loss of the weighted mean of ``(members, samples, classes)``
    probabilities: the maximum-likelihood mixing weights of a linear opinion pool.

    Log loss rather than accuracy: accuracy is a step function of the weights (flat almost everywhere, so
    the optimum is one of many ties, chosen by noise on a few hundred validation samples), while the log loss
    is a proper scoring rule that rewards calibrated confidence and is convex in the weights (minus the log
    of a linear function), so it has one optimum. It is reached by the EM update for mixing weights,
    ``w_m <- mean_i(w_m p_mi / sum_k w_k p_ki)`` with ``p_mi`` member m's probability of sample i's class:
    every step lowers the loss and stays on the simplex, no step size, deterministic. Members with identical
    predictions keep equal weights; a member that adds nothing tends to 0.
    """
    members, samples, _ = probs.shape
    true = np.maximum(probs[:, np.arange(samples), targets], PROB_FLOOR)  # (members, samples)
    weights = np.full(members, 1.0 / members)
    for _ in range(max_iter):
        updated = (weights[:, None] * true / (weights @ true)).mean(1)
        done = np.abs(updated - weights).max() < tol
        weights = updated
        if done:
            break
    return weights / weights.sum()


def find_runs(store: Store, filter_string: str) -> list[str]:
    """Finished runs matching an MLflow search filter, in every experiment; ensembles are left out (name one by id
    to nest it), as are runs without a test split (parents of sweeps, cross-validations and ablations)."""
    try:
        runs = store.search(filter_string)
    except ConfigError as err:
        raise ConfigError("--filter", err.problem, err.valid) from None
    return [r.info.run_id for r in runs if r.info.status == "FINISHED" and "split_hash" in r.data.tags
            and MEMBERS_TAG not in r.data.tags]


def _weight(store: Store, run: Any, metric: str) -> float:
    value = store.run_value(run, metric)
    value = run.data.metrics.get(metric) if value is None else value
    if value is None:
        raise ConfigError("--metric", f"run {run.info.run_id} has no metric {metric}", "a validation metric every member logged, "
                          "e.g. val/acc")
    return float(value)


def _predictions(store: Store, run_id: str, part: str, folder: Path) -> Predictions | None:
    """A run's saved predictions of one part; None when it has none (a run from before validation predictions
    were saved, a refit without validation data)."""
    path = store.try_download(run_id, artifact(part), folder / run_id / part)
    if path is None:
        return None
    arrays = load_npz(path, KEYS, f"a run that saved its {part} predictions")
    return Predictions.saved(arrays["probs"], arrays["targets"], arrays["index"])


def load_member(store: Store, run_id: str, metric: str | None, folder: Path) -> Member:
    run = store.find_run(run_id)
    if run is None:
        raise ConfigError("members", f"no MLflow run '{run_id}'", "run ids from `make ui`, or --filter")
    if run.info.status != "FINISHED":
        raise ConfigError("members", f"run {run_id} is {run.info.status}", "finished runs")
    test = _predictions(store, run_id, "test", folder)
    if test is None:
        raise ConfigError("members", f"run {run_id} has no {artifact('test')} artifact",
                          "finished classification or segmentation runs")
    task = run.data.params.get("task._target_", "ensemble" if run.data.tags.get("role") == "ensemble" else "unknown task")
    task = task.rsplit(".", 1)[-1]
    return Member(run_id, run.info.run_name or run_id, run.info.experiment_id, run.data.tags, test,
                  _predictions(store, run_id, "val", folder), _weight(store, run, metric) if metric else 1.0, task)


def _same_samples(first: Member, other: Member, part: str) -> bool:
    ours, theirs = getattr(first, part), getattr(other, part)
    return np.array_equal(ours.index, theirs.index) and np.array_equal(ours.targets, theirs.targets)


def check_members(members: list[Member]) -> None:
    """Same kind of predictions (masks or class rows), same test split (``split_hash``), same samples in the same
    order, same classes."""
    if len(members) < 2:
        raise ConfigError("members", f"an ensemble needs at least 2 runs, got {len(members)}", "two or more run ids, or --filter")
    first = members[0]
    for other in members[1:]:
        if (first.test.mask_shape is None) != (other.test.mask_shape is None):
            kinds = {m.run_id: f"{m.task}, {'masks' if m.test.mask_shape else 'classes'}" for m in (first, other)}
            raise ConfigError("members", "cannot ensemble masks with class predictions: " +
                              " and ".join(f"run {run_id} ({kind})" for run_id, kind in kinds.items()),
                              "runs of one kind: all segmentation runs or all classification runs")
        ours, theirs = first.tags.get("split_hash"), other.tags.get("split_hash")
        if ours != theirs:
            raise ConfigError("members", f"runs {first.run_id} and {other.run_id} were tested on different splits "
                              f"(split_hash {ours} vs {theirs})", "runs with the same data, split and preprocessing")
        if not _same_samples(first, other, "test"):
            raise ConfigError("members", f"runs {first.run_id} and {other.run_id} saved different test samples",
                              "runs with the same data, split and preprocessing")
        if first.test.probs.shape != other.test.probs.shape:
            raise ConfigError("members", f"runs {first.run_id} and {other.run_id} predict {first.test.probs.shape[1]} and "
                              f"{other.test.probs.shape[1]} classes", "runs on the same classes")


def shared_validation(members: list[Member], required: bool) -> bool:
    """Whether every member saved validation predictions of the same samples (index and targets) in the same order.
    When ``required`` (weights fitted on them), a member without them or a mismatch is an error naming the runs."""
    remedy = "runs with the same data, split and preprocessing (and seed of the split), or --weights metric"
    for member in members:
        if member.val is None:
            if required:
                raise ConfigError("members", f"run {member.run_id} has no {artifact('val')} artifact",
                                  "runs trained since validation predictions are saved, or --weights metric")
            return False
    first = members[0]
    for other in members[1:]:
        if not _same_samples(first, other, "val"):
            if required:
                raise ConfigError("members", f"runs {first.run_id} and {other.run_id} saved different validation samples",
                                  remedy)
            return False
    return True


def _classes(store: Store, run_id: str, count: int, folder: Path) -> list[str]:
    """Class names from a member's confusion matrix, or a segmentation run's class IoU table (label indices when it
    has neither)."""
    readers = {"confusion_matrix.json": lambda table: table["classes"],
               "test/class_iou.json": lambda rows: [r["class"] for r in rows]}
    for name, read in readers.items():
        path = store.try_download(run_id, name, folder / "classes")
        try:
            if path is not None:
                return [str(c) for c in read(json.loads(path.read_text()))]
        except (KeyError, TypeError, ValueError):
            pass
    return [str(c) for c in range(count)]


def pixel_confusion(predictions: Predictions, classes: list[str]) -> torch.Tensor:
    predicted = torch.from_numpy(predictions.probs.argmax(1))
    return label_confusion(predicted, torch.from_numpy(predictions.targets), len(classes))


def pixel_scores(predictions: Predictions, classes: list[str]) -> dict[str, float]:
    """Pixel accuracy, mIoU, mean Dice and IoU per class of per-pixel rows, as a segmentation run scores its masks."""
    return {k: float(v) for k, v in mask_scores(pixel_confusion(predictions, classes), classes).items()}


def _scores(predictions: Predictions, method: str, part: str, classes: list[str]) -> dict[str, float]:
    """The ensemble's scores on ``part``, named as a neural run names them (``test/acc``, ``val/miou``)."""
    if predictions.mask_shape is not None:
        scores = pixel_scores(predictions, classes)
    else:
        scores = classifier_scores(predictions.targets, predictions.probs, probabilities=method in ("average", "weighted"))
    return {f"{part}/{k}": v for k, v in scores.items()}


def _member_scores(predictions: Predictions, classes: list[str]) -> dict[str, float]:
    """What the table shows of a member on the test part: accuracy of class rows; pixel accuracy, mIoU, Dice of masks."""
    if predictions.mask_shape is None:
        return {"test/acc": _accuracy(predictions)}
    scores = pixel_scores(predictions, classes)
    return {f"test/{k}": scores[k] for k in MASK_COLUMNS}


def _check_options(method: str, metric: str | None, weights: str) -> None:
    if method not in METHODS:
        raise ConfigError("--method", f"unknown method '{method}'", METHODS)
    if weights not in WEIGHTS:
        raise ConfigError("--weights", f"unknown weighting '{weights}'", WEIGHTS)
    if weights == "val" and method != "weighted":
        raise ConfigError("--weights", f"--method {method} takes no weights", "--method weighted --weights val")
    if weights == "val" and metric:
        raise ConfigError("--metric", "--weights val fits the weights on validation predictions, not on a metric",
                          "drop --metric, or --weights metric")
    if method == "weighted" and weights == "metric" and not metric:
        raise ConfigError("--metric", "weighted averaging weighs members by a validation metric",
                          "e.g. --metric val/acc, or --weights val to fit the weights on validation predictions")


def _accuracy(predictions: Predictions) -> float:
    return float(np.mean(predictions.probs.argmax(1) == predictions.targets))


def run_ensemble(run_ids: list[str], filter_string: str | None, method: str, metric: str | None, root: Path,
                 run_name: str | None = None, weights: str = "metric") -> dict[str, Any]:
    """Combine the members' test predictions, print them next to each member and log the ensemble as its own run.

    ``weights`` (``--method weighted`` only): ``metric`` weighs each member by its validation ``metric``, ``val``
    fits the weights on the members' validation predictions (``fit_weights``)."""
    _check_options(method, metric, weights)
    store = open_store()
    ids = list(dict.fromkeys([*run_ids, *(find_runs(store, filter_string) if filter_string else [])]))
    with tempfile.TemporaryDirectory() as tmp:
        members = [load_member(store, run_id, metric if method == "weighted" else None, Path(tmp)) for run_id in ids]
        check_members(members)
        classes = _classes(store, members[0].run_id, members[0].test.probs.shape[1], Path(tmp))
    masks = members[0].test.mask_shape is not None
    if masks and method == "rank":
        raise ConfigError("--method", "rank ranks samples by score, masks are combined pixel by pixel",
                          [m for m in METHODS if m != "rank"])
    fitted = method == "weighted" and weights == "val"
    has_val = shared_validation(members, required=fitted)
    first = members[0]
    coefficients = np.array([m.weight for m in members])
    if fitted:
        coefficients = fit_weights(np.stack([m.val.probs for m in members]), first.val.targets)
    ensemble = {part: Predictions(combine(np.stack([getattr(m, part).probs for m in members]), method, coefficients),
                                  getattr(first, part).targets, getattr(first, part).index, getattr(first, part).mask_shape)
                for part in (("val", "test") if has_val else ("test",))}
    member_scores = [_member_scores(m.test, classes) for m in members]
    headline, name = ("test/miou", "miou") if masks else ("test/acc", "accuracy")
    member_headline = [scores[headline] for scores in member_scores]
    metrics = {k: v for part, predictions in ensemble.items() for k, v in _scores(predictions, method, part, classes).items()}
    metrics |= {f"members_best_test_{name}": max(member_headline), f"members_mean_test_{name}": float(np.mean(member_headline))}
    weighting = {"weights_from": weights} if method == "weighted" else {}
    config = {"method": method, "members": ",".join(ids), "metric": metric, **weighting,
              "weights": [round(float(w), 6) for w in coefficients]}
    tags = {MEMBERS_TAG: ",".join(ids), "role": "ensemble", "split_hash": first.tags["split_hash"],
            **{k: first.tags[k] for k in ("dataset", "data_md5", "data_fingerprint") if k in first.tags}}
    out_dir = root / "outputs" / f"ensemble-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    with open_run(store, store.experiment_name(first.experiment_id), run_name or f"ensemble-{method}-{len(members)}",
                  tags=tags, config=config, root=root) as run:
        write_json(metrics, out_dir / "metrics.json")
        run.log_metrics(metrics)
        rows = [{"run_id": m.run_id, "name": m.name, "weight": float(w), **scores,
                 **({"val_accuracy": _accuracy(m.val)} if has_val else {})}
                for m, w, scores in zip(members, coefficients, member_scores, strict=True)]
        run.log_dict({"method": method, "metric": metric, **weighting, "members": rows}, "ensemble.json")
        # masks: only the probabilities (classification_reports keeps just those), their scores are the metrics,
        # and the class table a segmentation run writes (a later ensemble of this one reads the class names there)
        classification_reports(run, classes, *ensemble["test"].to_save(), out_dir)
        if masks:
            for path in write_class_table(pixel_confusion(ensemble["test"], classes), classes, out_dir / "test"):
                run.log_artifact(path, "test")
        if has_val:
            log_predictions(run, "val", *ensemble["val"].to_save())
    _print(rows, metrics, method)
    return {"run_id": run.run_id, "headline": headline, **metrics}


def _print(rows: list[dict[str, Any]], metrics: dict[str, float], method: str) -> None:
    from rich.table import Table

    table = Table(title=f"ensemble ({method}) vs its members")
    # val_accuracy is a member's val part scored by argmax: pixel accuracy for masks, the ensemble's val/acc otherwise
    scores = [c for c in rows[0] if c.startswith("test/") or c == "val_accuracy"]
    for column in ("run", "name", "weight", *scores):
        table.add_column(column, justify="left" if column in ("run", "name") else "right")
    for row in rows:
        table.add_row(row["run_id"][:12], row["name"], f"{row['weight']:.4f}", *(f"{row[c]:.4f}" for c in scores))
    ensemble = {**metrics, "val_accuracy": metrics.get("val/acc", metrics.get("val/pixel_acc"))}
    table.add_row("ensemble", method, "", *("" if ensemble.get(c) is None else f"{ensemble[c]:.4f}" for c in scores),
                  style="bold")
    console.print(table)
