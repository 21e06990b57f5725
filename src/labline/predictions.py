"""Per-sample class probabilities of a run on one part, logged as ``predictions/<part>.npz`` (probs, targets, index).

Every classification run (a Lightning task that exposes probabilities, a scikit-learn baseline, an ensemble)
logs them for its validation and test parts, so runs can be combined sample by sample after the fact
(``labline ensemble``) without rebuilding a model: the test predictions are what an ensemble combines, the
validation predictions are where combination weights can be fitted without looking at the test part.
``index`` says which samples the rows are (dataset indices, or bag ids for MIL), so two runs' rows are only
combined when they are the same samples in the same order.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

FOLDER = "predictions"
KEYS = ("probs", "targets", "index")


def artifact(part: str) -> str:
    """``predictions/val.npz``, ``predictions/test.npz``."""
    return f"{FOLDER}/{part}.npz"


def log_predictions(tracker: Any, part: str, probs: np.ndarray, targets: np.ndarray, index: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{part}.npz"
        np.savez(path, probs=probs, targets=targets, index=index)
        tracker.log_artifact(path, FOLDER)


def part_index(datamodule: Any, part: str) -> np.ndarray:
    """What identifies each sample of ``part``, in loader order: the datamodule's own (bag ids) or dataset indices."""
    own = getattr(datamodule, "part_index", None)
    return own(part) if own is not None else datamodule.data.parts[part]


def part_dataset(datamodule: Any, part: str) -> Dataset:
    """The clean samples of ``part``, shaped like the test part's: for two-view (contrastive) data not the fixed
    validation views, which feed the contrastive loss, but the images themselves."""
    own = getattr(datamodule, "part_dataset", None)
    if own is not None:
        return own(part)
    idx = datamodule.data.parts[part]
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(datamodule.data.x[idx])), torch.from_numpy(datamodule.data.y[idx]))


def task_probabilities(task: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(probs, targets)`` the task gathered in its last test loop; None for tasks without per-sample probabilities."""
    if not getattr(task, "test_probs", None):
        return None
    return torch.cat(task.test_probs).numpy(), torch.cat(task.test_targets).numpy()


@contextmanager
def serving_as_test(datamodule: Any, part: str) -> Iterator[None]:
    """The datamodule's test loaders serve ``part`` in place of the test part (every labline datamodule builds its
    loaders from ``sets``), so the task's own test step scores it exactly as it scores the test part: same
    softmax, same zero-shot calibration, same linear probe fitted on the train part."""
    saved = datamodule.sets["test"]
    datamodule.sets["test"] = part_dataset(datamodule, part)
    try:
        yield
    finally:
        datamodule.sets["test"] = saved


def log_validation_predictions(run: Any, checkpoint: Path) -> None:
    """One pass of ``checkpoint`` (the best one) over the validation part, through the task's test step; logs
    ``predictions/val.npz``. Tasks without per-sample probabilities (few-shot episodes) and runs without a
    validation part log nothing."""
    if not hasattr(run.task, "test_probs"):
        return
    index = part_index(run.datamodule, "val")
    if len(index) == 0:
        return
    with serving_as_test(run.datamodule, "val"):
        run.trainer.test(run.task, datamodule=run.datamodule, ckpt_path=str(checkpoint), verbose=False)
    found = task_probabilities(run.task)
    if found is not None:
        log_predictions(run.tracker, "val", *found, index)
