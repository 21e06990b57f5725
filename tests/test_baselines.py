"""Classical baselines: every estimator option runs through the runner and records what a neural run records."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import adjusted_rand_score

from labline.core.errors import ConfigError
from labline.data.pipeline import load_processed
from labline.job import train_job
from labline.metrics.scores import classifier_scores, cluster_to_class, clustering_scores, matched_accuracy
from labline.runs.sklearn_run import build_estimator
from labline.tracking.store import tracking_uri
from testroot import ROOT

ESTIMATORS = ("sklearn", "sklearn_tree", "sklearn_nb", "sklearn_logreg", "sklearn_svm", "sklearn_rf", "sklearn_kmeans")
COMMON = ["threads=1", "logger.experiment_name=unit"]
# Tags only a network has (its complexity, its epochs); every other tag a neural run records, a baseline records too.
NEURAL_TAGS = ("model.", "distributed.", "best_epoch", "stopped_epoch", "skipped_batches", "mlflow.")


def _artifacts(client: MlflowClient, run_id: str, folder: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, folder or None):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_every_estimator_lands_in_mlflow_like_a_neural_run(compose, tmp_path) -> None:
    neural = train_job(compose("backbone=mlp", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", *COMMON),
                       tmp_path / "neural", ROOT)
    client = MlflowClient(tracking_uri())
    reference = client.get_run(neural["run_id"])
    tags = {k for k in reference.data.tags if not k.startswith(NEURAL_TAGS)}
    with np.load(client.download_artifacts(neural["run_id"], "predictions/val.npz", str(tmp_path / "dl"))) as val:
        # the validation pass scores the best checkpoint: its accuracy is the val/acc that checkpoint was chosen by
        assert np.mean(val["probs"].argmax(1) == val["targets"]) == pytest.approx(neural["best_value"])
    artifacts = {"config.yaml", "confusion_matrix.json", "plots/confusion_matrix.png", "predictions/test.npz",
                 "predictions/val.npz"}
    for option in ESTIMATORS:
        result = train_job(compose(f"task={option}", *COMMON), tmp_path / option, ROOT)
        run = client.get_run(result["run_id"])
        assert run.info.status == "FINISHED", option
        assert tags <= set(run.data.tags), (option, tags - set(run.data.tags))
        assert run.data.tags["split_hash"] == reference.data.tags["split_hash"], option
        test_keys = {k for k in run.data.metrics if k.startswith("test/")}
        assert {"test/acc", "test/f1_macro"} <= test_keys, option
        if option != "sklearn_kmeans":
            assert test_keys <= set(reference.data.metrics), (option, test_keys - set(reference.data.metrics))
            assert "val/acc" in run.data.metrics and "test/loss" in test_keys, option
        assert artifacts <= _artifacts(client, run.info.run_id), option
        assert (tmp_path / option / "metrics.json").exists()
        assert not any(k.startswith(("optimizer.", "backbone.", "trainer.")) for k in run.data.params), option
    kmeans = client.get_run(result["run_id"]).data.metrics
    assert {"test/ari", "test/nmi", "test/matched_acc", "val/ari"} <= set(kmeans)
    assert kmeans["test/ari"] > 0.55, "k-means on digits reaches an ARI of about 0.67 (PITFALLS.md)"


def test_knn_reaches_the_expected_accuracy(compose, tmp_path) -> None:
    """The run's test accuracy is scikit-learn's own k-NN (k=5) fitted on the same processed train part, computed here
    independently (5-fold on all of digits gives 0.986, PITFALLS.md; the 60/20/20 hold-out trains on 60%, so less).
    Its validation probabilities are saved whether or not it is tested, and are those val/acc was computed from."""
    from sklearn.neighbors import KNeighborsClassifier

    cfg = compose("task=sklearn", *COMMON)
    result = train_job(cfg, tmp_path, ROOT)
    data = load_processed(cfg, ROOT)
    flat, (train, test) = data.x.reshape(len(data.x), -1), (data.parts["train"], data.parts["test"])
    expected = KNeighborsClassifier().fit(flat[train], data.y[train]).score(flat[test], data.y[test])
    assert result["test/acc"] == pytest.approx(expected, abs=1e-12) and 0.95 < expected < 0.99
    assert result["monitor"] == "val/acc" and result["best_value"] > 0.95
    untested = train_job(compose("task=sklearn", "test_after_fit=false", *COMMON), tmp_path / "untested", ROOT)
    client = MlflowClient(tracking_uri())
    assert _artifacts(client, untested["run_id"], "predictions") == {"predictions/val.npz"}
    assert "test/acc" not in untested
    with np.load(client.download_artifacts(untested["run_id"], "predictions/val.npz", str(tmp_path / "dl"))) as val:
        assert np.array_equal(val["index"], load_processed(cfg, ROOT).parts["val"])
        assert np.mean(val["probs"].argmax(1) == val["targets"]) == pytest.approx(result["best_value"])


def test_matched_accuracy_and_ari_on_hand_made_labels() -> None:
    targets = np.array([0, 0, 1, 1, 2, 2])
    renamed = np.array([2, 2, 0, 0, 1, 1])  # a perfect clustering with other names
    assert cluster_to_class(targets, renamed) == {2: 0, 0: 1, 1: 2}
    assert matched_accuracy(targets, renamed) == 1.0
    assert clustering_scores(targets, renamed)["ari"] == pytest.approx(1.0)
    merged = np.array([0, 0, 0, 1, 1, 1])  # two clusters for three classes: at most 4 of 6 match one to one
    assert matched_accuracy(targets, merged) == pytest.approx(4 / 6)
    # ARI by hand: pairs together in both sum C(n_ij, 2) = 2; sum_i C(a_i, 2) = 3, sum_j C(b_j, 2) = 6; expected
    # 3 * 6 / C(6, 2) = 1.2; max (3 + 6) / 2 = 4.5 -> (2 - 1.2) / (4.5 - 1.2) = 0.2424...
    assert clustering_scores(targets, merged)["ari"] == pytest.approx(0.8 / 3.3)
    assert clustering_scores(targets, merged)["ari"] == pytest.approx(adjusted_rand_score(targets, merged))


def test_binary_scores_include_the_auc() -> None:
    """Two classes (MIL bags, binary datasets, their ensembles): the AUC is the positive column's, the same as the
    negative column's against the flipped labels."""
    targets, positive = np.array([0, 1, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.5, 0.9])
    scores = classifier_scores(targets, np.stack([1 - positive, positive], 1))
    assert scores["auroc_macro"] == pytest.approx(5 / 6) and scores["acc"] == pytest.approx(0.8)


def test_estimator_options_are_checked_and_seeded(compose, tmp_path) -> None:
    knn = build_estimator(compose("task=sklearn", "task.estimator.n_neighbors=3").task.estimator, 7, 10)
    assert knn.n_neighbors == 3
    assert build_estimator(compose("task=sklearn_rf").task.estimator, 7, 10).random_state == 7
    assert build_estimator(compose("task=sklearn_kmeans").task.estimator, 0, 4).n_clusters == 4
    cfg = compose("task=sklearn", "task.estimator._target_=sklearn.preprocessing.StandardScaler", "~task.estimator.n_neighbors",
                  "~task.estimator.weights")
    with pytest.raises(ConfigError, match="neither a classifier nor a clusterer"):
        build_estimator(cfg.task.estimator, 0, 10)
    with pytest.raises(ConfigError, match="task.estimator._target_"):
        build_estimator(compose("task=sklearn", "task.estimator._target_=sklearn.nope.KNN").task.estimator, 0, 10)
    with pytest.raises(ConfigError, match="task.estimator: The 'n_neighbors' parameter"):
        train_job(compose("task=sklearn", "task.estimator.n_neighbors=-1", *COMMON), tmp_path, ROOT)
    assert not MlflowClient(tracking_uri()).search_experiments(filter_string="name = 'unit'"), "no run for a user error"
