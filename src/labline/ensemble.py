"""``labline ensemble``: combine the test predictions of finished runs, logged as a run of its own.

Every classification run (neural, scikit-learn, another ensemble) saves its test
probabilities as ``predictions/test.npz``; an ensemble reads them back, so no model is
rebuilt or re-run. Combining is only meaningful sample by sample on the same test set:
members must carry equal ``split_hash`` tags (same data, split and preprocessing), else
the ensemble stops with one line naming the runs.

Combination rules, each giving one row of scores per test sample that sums to 1:

- ``vote``: max voting. Each member votes for its top class; scores are
  ``(votes + mean probability) / (members + 1)``, so the most-voted class wins and the
  averaged probabilities only break ties.
- ``average``: the mean of the members' probabilities (soft voting).
- ``weighted``: the weighted mean, each member weighted by its validation metric
  (``--metric``, higher is better; the value at the epoch whose checkpoint was tested).
- ``rank``: each member's probabilities for a class are replaced by their ranks over the
  test samples (scaled to (0, 1]), then averaged: members whose scores live on different
  scales (an SVM's Platt scores, a network's softmax) count equally. Made for ranking
  metrics (AUC); across classes of one sample, ranks compare only roughly.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labline import report
from labline.baselines import classifier_scores
from labline.data.files import load_npz, write_json
from labline.errors import ConfigError
from labline.training import METRIC_NAMES, classification_reports

METHODS = ("vote", "average", "weighted", "rank")
PREDICTIONS = "predictions/test.npz"
MEMBERS_TAG = "ensemble_members"


@dataclass
class Member:
    run_id: str
    name: str
    experiment_id: str
    tags: dict[str, str]
    probs: np.ndarray
    targets: np.ndarray
    index: np.ndarray
    weight: float = 1.0


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


def _client() -> Any:
    """A client on the project's store; artifact progress bars off (one per member would bury the table)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
    from mlflow.tracking import MlflowClient

    from labline.tracking.store import tracking_uri

    os.environ.setdefault(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false")
    return MlflowClient(tracking_uri())


def find_runs(client: Any, filter_string: str) -> list[str]:
    """Finished runs matching an MLflow search filter, in every experiment; ensembles are left out (name one by id
    to nest it), as are runs without a test split (parents of sweeps, cross-validations and ablations)."""
    from mlflow.exceptions import MlflowException

    from labline.ablation.runs import search_all

    experiments = [e.experiment_id for e in client.search_experiments()]
    try:
        runs = search_all(client, experiments, filter_string)
    except MlflowException as exc:
        raise ConfigError("--filter", " ".join(str(exc).split())[:300], "an MLflow filter, e.g. \"tags.dataset = 'digits'\"") \
            from None
    return [r.info.run_id for r in runs if r.info.status == "FINISHED" and "split_hash" in r.data.tags
            and MEMBERS_TAG not in r.data.tags]


def _weight(client: Any, run: Any, metric: str) -> float:
    from labline.ablation.runs import run_value

    value = run_value(client, run, metric)
    value = run.data.metrics.get(metric) if value is None else value
    if value is None:
        raise ConfigError("--metric", f"run {run.info.run_id} has no metric {metric}", "a validation metric every member logged, "
                          "e.g. val/acc")
    return float(value)


def load_member(client: Any, run_id: str, metric: str | None, folder: Path) -> Member:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError("members", f"no MLflow run '{run_id}'", "run ids from `make ui`, or --filter") from None
    if run.info.status != "FINISHED":
        raise ConfigError("members", f"run {run_id} is {run.info.status}", "finished runs")
    try:
        path = Path(client.download_artifacts(run_id, PREDICTIONS, str(folder / run_id)))
    except (MlflowException, OSError):
        raise ConfigError("members", f"run {run_id} has no {PREDICTIONS} artifact", "finished classification runs") from None
    arrays = load_npz(path, ("probs", "targets", "index"), "a run that saved its test predictions")
    return Member(run_id, run.info.run_name or run_id, run.info.experiment_id, run.data.tags,
                  arrays["probs"].astype(np.float64), arrays["targets"], arrays["index"],
                  _weight(client, run, metric) if metric else 1.0)


def check_members(members: list[Member]) -> None:
    """Same test split (``split_hash``), same samples in the same order, same classes."""
    if len(members) < 2:
        raise ConfigError("members", f"an ensemble needs at least 2 runs, got {len(members)}", "two or more run ids, or --filter")
    first = members[0]
    for other in members[1:]:
        ours, theirs = first.tags.get("split_hash"), other.tags.get("split_hash")
        if ours != theirs:
            raise ConfigError("members", f"runs {first.run_id} and {other.run_id} were tested on different splits "
                              f"(split_hash {ours} vs {theirs})", "runs with the same data, split and preprocessing")
        if not (np.array_equal(first.index, other.index) and np.array_equal(first.targets, other.targets)):
            raise ConfigError("members", f"runs {first.run_id} and {other.run_id} saved different test samples",
                              "runs with the same data, split and preprocessing")
        if first.probs.shape != other.probs.shape:
            raise ConfigError("members", f"runs {first.run_id} and {other.run_id} predict {first.probs.shape[1]} and "
                              f"{other.probs.shape[1]} classes", "runs on the same classes")


def _classes(client: Any, run_id: str, count: int, folder: Path) -> list[str]:
    """Class names from a member's confusion matrix (label indices when it has none)."""
    from mlflow.exceptions import MlflowException

    try:
        path = client.download_artifacts(run_id, "confusion_matrix.json", str(folder / "classes"))
        return [str(c) for c in json.loads(Path(path).read_text())["classes"]]
    except (MlflowException, OSError, KeyError, ValueError):
        return [str(c) for c in range(count)]


def _scores(targets: np.ndarray, probs: np.ndarray, method: str) -> dict[str, float]:
    scores = classifier_scores(targets, probs, probabilities=method in ("average", "weighted"))
    return {METRIC_NAMES.get(f"test/{k}", f"test_{k}"): v for k, v in scores.items()}


def run_ensemble(run_ids: list[str], filter_string: str | None, method: str, metric: str | None, root: Path,
                 run_name: str | None = None) -> dict[str, Any]:
    """Combine the members' test predictions, print them next to each member and log the ensemble as its own run."""
    from labline.tracking.tracker import MlflowTracker

    if method not in METHODS:
        raise ConfigError("--method", f"unknown method '{method}'", METHODS)
    if method == "weighted" and not metric:
        raise ConfigError("--metric", "weighted averaging weighs members by a validation metric", "e.g. --metric val/acc")
    client = _client()
    ids = list(dict.fromkeys([*run_ids, *(find_runs(client, filter_string) if filter_string else [])]))
    with tempfile.TemporaryDirectory() as tmp:
        members = [load_member(client, run_id, metric if method == "weighted" else None, Path(tmp)) for run_id in ids]
        check_members(members)
        classes = _classes(client, members[0].run_id, members[0].probs.shape[1], Path(tmp))
    weights = np.array([m.weight for m in members])
    probs = combine(np.stack([m.probs for m in members]), method, weights)
    targets, index = members[0].targets, members[0].index
    member_acc = [float(np.mean(m.probs.argmax(1) == targets)) for m in members]
    metrics = {**_scores(targets, probs, method), "members_best_test_accuracy": max(member_acc),
               "members_mean_test_accuracy": float(np.mean(member_acc))}
    first = members[0]
    config = {"method": method, "members": ",".join(ids), "metric": metric, "weights": [round(float(w), 6) for w in weights]}
    tags = {MEMBERS_TAG: ",".join(ids), "role": "ensemble", "split_hash": first.tags["split_hash"],
            **{k: first.tags[k] for k in ("dataset", "data_md5", "data_fingerprint") if k in first.tags}}
    out_dir = root / "outputs" / f"ensemble-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracker = MlflowTracker(experiment_name=client.get_experiment(first.experiment_id).name)
    with tracker.start(run_name or f"ensemble-{method}-{len(members)}", config, tags, root):
        write_json(metrics, out_dir / "metrics.json")
        tracker.log_metrics(metrics)
        rows = [{"run_id": m.run_id, "name": m.name, "weight": float(w), "test_accuracy": acc}
                for m, w, acc in zip(members, weights, member_acc, strict=True)]
        tracker.log_dict({"method": method, "metric": metric, "members": rows}, "ensemble.json")
        classification_reports(tracker, classes, probs, targets, index, out_dir)
    _print(rows, metrics["test_accuracy"], method)
    return {"run_id": tracker.run_id, **metrics}


def _print(rows: list[dict[str, Any]], accuracy: float, method: str) -> None:
    from rich.table import Table

    table = Table(title=f"ensemble ({method}) vs its members")
    for column in ("run", "name", "weight", "test_accuracy"):
        table.add_column(column, justify="right" if column in ("weight", "test_accuracy") else "left")
    for row in rows:
        table.add_row(row["run_id"][:12], row["name"], f"{row['weight']:.4f}", f"{row['test_accuracy']:.4f}")
    table.add_row("ensemble", method, "", f"{accuracy:.4f}", style="bold")
    report.console.print(table)
