"""The researcher's own data through the real CLI: a CSV table with its own split (neural and scikit-learn runs on
the same split), an image folder decoded once by the prepare stage, and the one-line warnings of defaults that do
not fit the data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from project_copy import run_cli
from sklearn.datasets import load_digits, load_wine

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=1", "threads=1", "logger.log_checkpoint=false"]


@pytest.fixture(scope="module")
def wine(project: Path) -> Path:
    """Wine with a text column and its own split: every fourth row tests, the others train."""
    frame = load_wine(as_frame=True).frame
    frame["colour"] = np.where(frame["alcohol"] > 13, "dark", "light")
    frame["part"] = np.where(np.arange(len(frame)) % 4 == 0, "test", "train")
    path = project / "wine.csv"
    frame.to_csv(path, index=False)
    return path


def _latest_metrics(project: Path) -> dict:
    runs = sorted((project / "outputs").rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def test_csv_with_its_own_split_trains_neural_and_sklearn_runs_on_the_given_test_rows(project: Path, wine: Path) -> None:
    words = ["data=csv", "data.source.path=wine.csv", "data.source.target=target", "data.source.split_column=part",
             "split=given"]
    result = run_cli(project, "labline", "params", *words)
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("prepare", "split"):
        result = run_cli(project, "labline", "stage", stage)
        assert result.returncode == 0, result.stderr[-2000:]
    test = np.loadtxt(project / "data" / "splits" / "wine" / "test.txt", dtype=np.int64)
    assert test.tolist() == list(range(0, 178, 4)), "the DVC split stage records the given test rows"
    val = np.loadtxt(project / "data" / "splits" / "wine" / "val.txt", dtype=np.int64)
    assert len(val) in (26, 27) and not set(val.tolist()) & set(test.tolist()), "val carved out of the given train rows"
    for task in ("task=classification", "task=sklearn_logreg"):
        result = run_cli(project, "labline", "train", *words, task, "backbone=mlp", *TINY)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "labline: warning" not in result.stderr
        assert _latest_metrics(project)["test/acc"] > 0.5


def test_global_scaling_of_mixed_scale_columns_warns_in_one_line(project: Path, wine: Path) -> None:
    result = run_cli(project, "labline", "train", "data=csv", "data.source.path=wine.csv", "data.source.target=target",
                     "preprocess.per_feature=false", "backbone=mlp", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("labline: warning:")]
    assert len(warnings) == 1 and "preprocess.per_feature" in warnings[0], result.stderr[-2000:]


def test_image_folder_is_decoded_once_by_the_prepare_stage(project: Path) -> None:
    digits = load_digits()
    root = project / "digit_images"
    for i in range(300):
        path = root / str(digits.target[i]) / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(path)
    result = run_cli(project, "labline", "params", "data=image_folder", "data.source.root=digit_images",
                     "data.source.size=8", "backbone=mlp", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_cli(project, "labline", "stage", "prepare")
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(project / "data" / "raw" / "digit_images.npz") as raw:
        assert raw["x"].shape == (300, 1, 8, 8) and raw["x"].max() == 240
        assert list(raw["classes"]) == [str(c) for c in range(10)]
    shutil.rmtree(root)  # every later stage reads the decoded array file, never the images
    # the stages run by hand, as `dvc repro` would; the copy's dvc.lock records the bundled digits' outputs
    (project / "dvc.lock").unlink()
    for stage in ("split", "preprocess", "train", "evaluate"):
        result = run_cli(project, "labline", "stage", stage)
        assert result.returncode == 0, f"{stage}: {result.stderr[-2000:]}"
    assert json.loads((project / "reports" / "metrics.json").read_text())["test/acc"] > 0.3


def test_a_tcn_reading_only_its_last_step_on_a_longer_sequence_warns(project: Path) -> None:
    result = run_cli(project, "labline", "train", "data=digits_seq", "backbone=tcn", "backbone.pool=last", "backbone.grow=false",
                     "+trainer.limit_train_batches=2", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("labline: warning:")]
    assert len(warnings) == 1 and "29 of the 64 steps" in warnings[0], result.stderr[-2000:]
