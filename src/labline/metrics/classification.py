"""The metric set a classification task logs per epoch."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from labline.core.errors import ConfigError


def classification_metrics(num_classes: int, top_k: int | None = 5, ranking: bool = False) -> MetricCollection:
    """Accuracy, top-k accuracy, precision / recall / F1 (macro and micro); with ``ranking``
    also macro one-vs-rest ROC-AUC and average precision.

    Top-k is left out when ``k`` is 1 (that is ``acc``) or covers every class
    (always 1). The ranking metrics keep every score of the epoch to compute
    exact curves, which is why tasks ask for them on val/test only.
    Micro precision, recall and F1 equal accuracy for single-label data; they are
    kept so multi-label and single-label runs report the same keys.
    """
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ConfigError("task.top_k", f"must be a positive integer or null, got {top_k!r}", "null, 2 .. num_classes - 1")
    metrics = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if top_k is not None and 1 < top_k < num_classes:
        metrics[f"acc_top{top_k}"] = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
    for average in ("macro", "micro"):
        metrics[f"precision_{average}"] = MulticlassPrecision(num_classes, average=average)
        metrics[f"recall_{average}"] = MulticlassRecall(num_classes, average=average)
        metrics[f"f1_{average}"] = MulticlassF1Score(num_classes, average=average)
    if ranking:
        metrics["auroc_macro"] = MulticlassAUROC(num_classes, average="macro")
        metrics["ap_macro"] = MulticlassAveragePrecision(num_classes, average="macro")
    return MetricCollection(metrics)
