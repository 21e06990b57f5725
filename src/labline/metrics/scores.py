"""Scores of finished predictions (numpy arrays): what scikit-learn baselines, ensembles and clusterers are
judged by, named as the neural tasks log them (``acc``, ``f1_macro``, ``loss``, ...)."""

from __future__ import annotations

import numpy as np


def cluster_to_class(targets: np.ndarray, clusters: np.ndarray) -> dict[int, int]:
    """The one-to-one cluster -> class mapping that agrees with the most labels (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    cluster_ids, classes = np.unique(clusters), np.unique(targets)
    table = np.array([[np.sum((clusters == c) & (targets == t)) for t in classes] for c in cluster_ids])
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(cluster_ids[r]): int(classes[c]) for r, c in zip(rows, cols, strict=True)}


def matched_accuracy(targets: np.ndarray, clusters: np.ndarray) -> float:
    """Clustering accuracy: the share of samples whose cluster maps to their class under the best one-to-one mapping."""
    mapping = cluster_to_class(targets, clusters)
    return float(np.mean([mapping.get(int(c), -1) == t for c, t in zip(clusters, targets, strict=True)]))


def clustering_scores(targets: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {"ari": float(adjusted_rand_score(targets, clusters)), "nmi": float(normalized_mutual_info_score(targets, clusters)),
            "matched_acc": matched_accuracy(targets, clusters)}


def classifier_scores(targets: np.ndarray, probs: np.ndarray, probabilities: bool = True) -> dict[str, float]:
    """Accuracy, macro precision / recall / F1, macro one-vs-rest ROC-AUC of the scores (when every class is present;
    for two classes the AUC of the second, which both one-vs-rest AUCs equal) and, for real probabilities, the log
    loss (the neural runs' ``loss``); named as the neural tasks log them."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_score, recall_score, roc_auc_score

    predicted, every = probs.argmax(1), list(range(probs.shape[1]))
    scores = {"acc": accuracy_score(targets, predicted),
              "precision_macro": precision_score(targets, predicted, labels=every, average="macro", zero_division=0),
              "recall_macro": recall_score(targets, predicted, labels=every, average="macro", zero_division=0),
              "f1_macro": f1_score(targets, predicted, labels=every, average="macro", zero_division=0)}
    if probabilities:
        scores["loss"] = log_loss(targets, probs, labels=every)
    if len(np.unique(targets)) == probs.shape[1]:
        binary = probs.shape[1] == 2  # scikit-learn takes binary scores as one column
        scores["auroc_macro"] = (roc_auc_score(targets, probs[:, 1]) if binary
                                 else roc_auc_score(targets, probs, multi_class="ovr", average="macro", labels=every))
    return {k: float(v) for k, v in scores.items()}
