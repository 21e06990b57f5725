"""Per-sample class probabilities of a run on one part, logged as ``predictions/<part>.npz`` (probs, targets, index).

Every classification run (a Lightning task that exposes probabilities, a scikit-learn baseline, an ensemble)
logs them for its validation and test parts, so runs can be combined sample by sample after the fact
(``labline ensemble``) without rebuilding a model: the test predictions are what an ensemble combines, the
validation predictions are where combination weights can be fitted without looking at the test part.
``index`` says which samples the rows are (dataset indices, or bag ids for MIL), so two runs' rows are only
combined when they are the same samples in the same order. Segmentation runs save ``(N, K, H, W)`` per-pixel
probabilities and ``(N, H, W)`` target masks; those are stored as float16 (a classifier's rows stay as given),
which keeps a part's file small and changes no argmax that is not a near-tie.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from labline.data.datamodule import DataModule
from labline.tracking.lifecycle import RunHandle

FOLDER = "predictions"
KEYS = ("probs", "targets", "index")


def artifact(part: str) -> str:
    """``predictions/val.npz``, ``predictions/test.npz``."""
    return f"{FOLDER}/{part}.npz"


def is_masks(probs: np.ndarray) -> bool:
    """Whether saved probabilities are per-pixel maps ``(N, K, H, W)`` rather than one row per sample."""
    return probs.ndim == 4


def log_predictions(run: RunHandle, part: str, probs: np.ndarray, targets: np.ndarray, index: np.ndarray) -> None:
    if is_masks(probs):
        probs = probs.astype(np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{part}.npz"
        np.savez(path, probs=probs, targets=targets, index=index)
        run.log_artifact(path, FOLDER)


@contextmanager
def serving_as_test(datamodule: DataModule, part: str) -> Iterator[None]:
    """The datamodule's test loaders serve ``part`` in place of the test part (every labline datamodule builds its
    loaders from ``sets``), so the task's own test step scores it exactly as it scores the test part: same
    softmax, same zero-shot calibration, same linear probe fitted on the train part."""
    saved = datamodule.sets["test"]
    datamodule.sets["test"] = datamodule.part_dataset(part)
    try:
        yield
    finally:
        datamodule.sets["test"] = saved
