"""What every classifier records at test, whatever produced its probabilities (a Lightning task, a
scikit-learn estimator, an ensemble of runs), so that all of them can be compared and combined."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labline.core.io import write_json
from labline.reporting import plots
from labline.runs.predictions import is_masks, log_predictions
from labline.tracking.lifecycle import RunHandle


def classification_reports(run: RunHandle, classes: list[str], probs: np.ndarray, targets: np.ndarray, index: np.ndarray,
                           reports: Path) -> None:
    """Confusion matrix (JSON, PNG), per-sample predictions for ``dvc plots``, probabilities for ensembles.
    Masks keep only their probabilities: a sample has no single label, and the segmentation task writes its own
    per-class table."""
    if is_masks(probs):
        log_predictions(run, "test", probs, targets, index)
        return
    from sklearn.metrics import confusion_matrix

    predicted = probs.argmax(1)
    matrix = confusion_matrix(targets, predicted, labels=list(range(len(classes))))
    write_json({"classes": classes, "matrix": matrix.tolist()}, reports / "confusion_matrix.json")
    cm_png = plots.confusion_matrix(matrix, classes, reports / "confusion_matrix.png")
    rows = [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(targets, predicted, strict=True)]
    write_json(rows, reports / "predictions.json")
    run.log_artifact(cm_png, "plots")
    run.log_dict({"classes": classes, "matrix": matrix.tolist()}, "confusion_matrix.json")
    log_predictions(run, "test", probs, targets, index)
