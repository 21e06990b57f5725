"""Figures a researcher looks at first: learning curves, the confusion matrix, accuracy under distribution shift."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curves(rows: Sequence[dict[str, float]], path: Path, best_epoch: int | None = None) -> Path:
    """Train vs validation loss and accuracy per epoch; the gap diagnoses over- and under-fitting."""
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        for part, style in (("train", "-"), ("val", "--")):
            values = [r.get(f"{part}/{metric}", np.nan) for r in rows]
            ax.plot(epochs, values, style, marker=".", label=part)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", lw=0.8, ls=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MAX_LABELLED_CLASSES = 30


def confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Cell counts and tick labels only up to 30 classes: hundreds (e.g. glyphs) would make a huge, unreadable
    figure that takes minutes to draw; above that the matrix is drawn as an image of fixed size."""
    labelled = len(classes) <= MAX_LABELLED_CLASSES
    size = max(4.0, 0.45 * len(classes) + 2) if labelled else 10.0
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    if labelled:
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix if labelled else np.empty((0, 0))):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > threshold else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def shift_heatmap(rows: Sequence[str], columns: Sequence[str], accuracy: np.ndarray, clean: float, path: Path,
                  title: str = "accuracy under corruption") -> Path:
    """Accuracy per corruption (row) and severity (column), each cell written, on a fixed 0..1 colour scale so
    two models' maps compare by eye; the clean accuracy is in the title (severity 0)."""
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.5 * len(rows) + 1.5))
    image = ax.imshow(accuracy, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("severity")
    ax.set_title(f"{title} (clean {clean:.3f})")
    for (i, j), v in np.ndenumerate(accuracy):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.5 else "black")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
