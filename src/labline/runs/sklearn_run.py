"""Classical baselines (``task=sklearn``, ``task=sklearn_<family>``): scikit-learn estimators run like any labline task.

A baseline only counts when it saw the same data as the network it is compared with, so the
estimator reads the same processed arrays (prepare -> split -> preprocess, statistics fitted on
the train part) and records the same MLflow run: the resolved config (without the groups only a
network uses: backbone, head, loss, optimizer, ...), provenance tags including ``split_hash``,
``val/`` and test metrics under the neural runs' names, the confusion matrix,
``predictions/val.npz`` and ``predictions/test.npz`` (so baselines can join ensembles) and ``metrics.json``.

A classifier fits the train part. Its probabilities come from ``predict_proba``; an estimator
without it (e.g. ``SVC(probability=False)``) saves its predictions one-hot (tag ``probabilities``).
With ``task.fit_unlabeled: true`` (semi-supervised estimators such as ``LabelSpreading``) it fits the
labeled train part and the ``unlabeled`` part together, the latter with the label -1.
A clusterer (k-means) fits the train part without labels and is scored by ARI, NMI and the
accuracy of the best one-to-one cluster-to-class matching on the scored part (``matched_acc``,
the usual clustering accuracy). Its class predictions (``test/acc``, confusion matrix,
predictions) use the matching found on the train part, so no test label decides a prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from labline.core.config import to_plain
from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.core.io import write_json
from labline.data.pipeline import ProcessedData
from labline.data.semi import PART, UNLABELED, load_training_data
from labline.metrics.scores import classifier_scores, cluster_to_class, clustering_scores
from labline.reporting.console import config_tree, metrics_table, run_footer, run_header
from labline.runs.context import NO_CONTEXT, RunContext
from labline.runs.lightning_run import RUN_RECORD
from labline.runs.predictions import log_predictions
from labline.runs.records import config_hash, data_tags
from labline.runs.reports import classification_reports
from labline.runs.runtime import runtime_tags, setup_runtime
from labline.tracking.lifecycle import open_run

NEURAL_GROUPS = ("backbone", "head", "loss", "optimizer", "scheduler", "trainer", "callbacks", "run_callbacks", "augment")


def build_estimator(node: DictConfig | None, seed: int, num_classes: int) -> Any:
    """The estimator of ``task.estimator``, seeded by the run's seed where it takes a ``random_state`` left unset,
    with ``n_clusters: null`` meaning one cluster per class."""
    from sklearn.base import is_classifier, is_clusterer

    if node is None or OmegaConf.is_missing(node, "_target_"):
        raise ConfigError("task.estimator", "no estimator configured", "a node with _target_, e.g. sklearn.svm.SVC")
    estimator = instantiate(node, "task.estimator")
    if not (is_classifier(estimator) or is_clusterer(estimator)):
        raise ConfigError("task.estimator._target_", f"{type(estimator).__name__} is neither a classifier nor a clusterer",
                          "a scikit-learn classifier, clusterer or pipeline ending in one")
    if not hasattr(estimator, "predict"):
        raise ConfigError("task.estimator._target_", f"{type(estimator).__name__} cannot assign new samples (no predict)",
                          "a clusterer with predict, e.g. sklearn.cluster.KMeans")
    params = estimator.get_params(deep=False)
    if "random_state" in params and params["random_state"] is None:
        estimator.set_params(random_state=seed)
    if "n_clusters" in params and params["n_clusters"] is None:
        estimator.set_params(n_clusters=num_classes)
    return estimator


def estimator_name(estimator: Any) -> str:
    """``SVC``; a wrapper by what it wraps too (``CalibratedClassifierCV(SVC)``), so run names tell baselines apart."""
    inner = estimator.get_params(deep=False).get("estimator")
    name = type(estimator).__name__
    return f"{name}({estimator_name(inner)})" if hasattr(inner, "get_params") else name


def _class_probabilities(estimator: Any, x: np.ndarray, num_classes: int) -> tuple[np.ndarray, bool]:
    """``(N, K)`` probabilities over all K classes (columns the estimator never saw stay 0), and whether they are real."""
    probs = np.zeros((len(x), num_classes))
    if hasattr(estimator, "predict_proba"):
        probs[:, estimator.classes_] = estimator.predict_proba(x)
        # A graph method (LabelSpreading) gives no distribution to a sample no label reached (0/0): uniform.
        unreached = ~np.isfinite(probs).all(1) | (probs.sum(1) <= 0)
        probs[unreached] = 1.0
        return probs / probs.sum(1, keepdims=True), True
    probs[np.arange(len(x)), estimator.predict(x)] = 1.0
    return probs, False


class _Fitted:
    """A fitted estimator read as a classifier: a clusterer through its train-part cluster -> class matching."""

    def __init__(self, estimator: Any, data: ProcessedData, x: np.ndarray, fit_unlabeled: bool = False):
        from sklearn.base import is_clusterer

        self.estimator, self.data, self.x, self.num_classes = estimator, data, x, len(data.classes)
        self.clusterer = is_clusterer(estimator)
        train = data.parts["train"]
        self.mapping: dict[int, int] = {}
        if self.clusterer:
            estimator.fit(x[train])
            self.mapping = cluster_to_class(data.y[train], estimator.predict(x[train]))
        elif fit_unlabeled:  # a semi-supervised estimator: the unlabeled part joins with the label -1
            both = np.concatenate([train, data.parts[PART]])
            estimator.fit(x[both], np.concatenate([data.y[train], np.full(len(data.parts[PART]), UNLABELED)]))
        else:
            estimator.fit(x[train], data.y[train])

    def scores(self, part: str) -> tuple[dict[str, float], np.ndarray, bool]:
        """Metrics of one part (unprefixed), its class probabilities and whether they are real probabilities."""
        idx = self.data.parts[part]
        targets = self.data.y[idx]
        if not self.clusterer:
            probs, real = _class_probabilities(self.estimator, self.x[idx], self.num_classes)
            return classifier_scores(targets, probs, real), probs, real
        clusters = self.estimator.predict(self.x[idx])
        # A cluster left without a class (more clusters than classes) predicts none: a uniform row.
        probs = np.full((len(idx), self.num_classes), 1.0 / self.num_classes)
        for row, cluster in enumerate(clusters):
            if int(cluster) in self.mapping:
                probs[row] = np.eye(self.num_classes)[self.mapping[int(cluster)]]
        return {**clustering_scores(targets, clusters), **classifier_scores(targets, probs, False)}, probs, False


def run(cfg: DictConfig, out_dir: Path, root: Path, do_test: bool | None = None,
        context: RunContext = NO_CONTEXT) -> dict[str, Any]:
    """The ``task.runner`` of the baseline tasks: fit on the train part, score val (its probabilities logged as
    ``predictions/val.npz``), test once unless ``do_test`` is false (default: ``test_after_fit``); the context's
    tags are added to the run's. Returns what ``train_and_test`` returns, ``best_value`` being ``task.monitor``."""
    do_test = bool(cfg.get("test_after_fit", True)) if do_test is None else do_test
    setup_runtime(cfg)
    full = to_plain(cfg)
    config = {k: v for k, v in full.items() if k not in NEURAL_GROUPS}
    data = load_training_data(cfg, root)
    estimator = build_estimator(cfg.task.get("estimator"), cfg.seed, len(data.classes))
    destination = instantiate(cfg.logger, "logger")
    name = estimator_name(estimator)
    tags = {**data_tags(cfg, data), **runtime_tags(), "config_hash": config_hash(full),
            "estimator": f"{type(estimator).__module__}.{type(estimator).__name__}", **context.tags}
    monitor = str(cfg.task.get("monitor", "val/acc"))
    if cfg.get("verbose", False):
        config_tree(config)
    fit_unlabeled = bool(cfg.task.get("fit_unlabeled", False))
    if fit_unlabeled and len(data.parts.get(PART, ())) == 0:
        raise ConfigError("data.labels_per_class", "task.fit_unlabeled: the estimator learns from unlabeled data, but the "
                          "run has none", "data.labels_per_class=N, data.labeled_fraction=f or +data.unlabeled_source=pool.npz")
    metrics: dict[str, float] = {}
    # Fitting takes seconds and is where scikit-learn checks its parameters: a bad value is reported before any run exists.
    try:
        fitted = _Fitted(estimator, data, data.x.reshape(len(data.x), -1).astype(np.float64), fit_unlabeled)
    except (ValueError, TypeError) as exc:
        raise ConfigError("task.estimator", " ".join(str(exc).split())) from None
    run_name = cfg.run_name or "-".join(filter(None, (context.kind, f"{cfg.data.name}-{name}-seed{cfg.seed}")))
    if not context.quiet:
        run_header(run_name, f"{name} on {cfg.data.name}", destination.experiment_name, destination.store.uri)
    with open_run(destination.store, destination.experiment_name, run_name, tags=tags, config=config, root=root) as handle:
        val: dict[str, float] = {}
        if len(data.parts["val"]):
            val, val_probs, _ = fitted.scores("val")
            log_predictions(handle, "val", val_probs, data.y[data.parts["val"]], data.parts["val"])
        handle.log_metrics({f"val/{k}": v for k, v in val.items()}, step=0)
        if do_test:
            scores, probs, real = fitted.scores("test")
            metrics = {f"test/{k}": v for k, v in scores.items()}
            write_json(metrics, out_dir / "metrics.json")
            handle.log_metrics(metrics)
            handle.set_tags({"probabilities": str(real).lower()})
            test = data.parts["test"]
            classification_reports(handle, data.classes, probs, data.y[test], test, out_dir)
        write_json({"run_id": handle.run_id}, out_dir / RUN_RECORD)
    if not context.quiet:
        if metrics:
            metrics_table(metrics)
        run_footer(handle.run_id)
    return {"run_id": handle.run_id, "monitor": monitor, "best_value": val.get(monitor.removeprefix("val/")),
            "best_epoch": None, **metrics}
