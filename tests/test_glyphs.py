"""The procedural glyphs dataset and the class-disjoint split few-shot learning needs."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from labline.core.errors import ConfigError
from labline.data.class_splits import class_split
from labline.data.glyphs import glyphs
from labline.data.pipeline import split_dataset
from labline.runs.lightning_run import train_and_test
from labline.tracking.store import tracking_uri

SMALL = {"classes": 12, "samples": 6, "size": 16}


def test_same_seed_same_glyphs_other_seed_other_glyphs() -> None:
    first, again, other = glyphs(**SMALL, seed=3), glyphs(**SMALL, seed=3), glyphs(**SMALL, seed=4)
    assert np.array_equal(first.x, again.x) and first.classes == again.classes
    assert not np.allclose(first.x, other.x)


def test_images_labels_and_names() -> None:
    ds = glyphs(**SMALL)
    assert ds.x.shape == (72, 1, 16, 16) and ds.x.dtype == np.float32
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert (ds.x.reshape(72, -1).max(1) > 0.5).all(), "every sample carries ink"
    assert np.array_equal(ds.y, np.repeat(np.arange(12), 6))
    assert ds.classes[0] == "g00" and ds.classes[-1] == "g11"


def test_classes_differ_more_than_samples_of_a_class() -> None:
    ds = glyphs(classes=20, samples=8, size=28)
    flat = ds.x.reshape(20, 8, -1)
    means = flat.mean(1)
    within = np.linalg.norm(flat - means[:, None], axis=-1).mean()
    between = np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(20, dtype=bool)]
    assert between.min() > 0.0
    assert within < between.mean()


def test_samples_of_a_class_are_not_copies() -> None:
    flat = glyphs(**SMALL).x.reshape(12, 6, -1)
    assert all(len({row.tobytes() for row in cls}) == 6 for cls in flat)


@pytest.mark.parametrize(("kwargs", "key"), [({"size": 4}, "data.source.size"), ({"min_strokes": 5}, "data.source.min_strokes"),
                                             ({"classes": 0}, "data.source.classes"), ({"wobble": -1.0}, "data.source.wobble"),
                                             ({"thickness": (2.0, 1.0)}, "data.source.thickness")])
def test_bad_glyph_settings_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        glyphs(**{**SMALL, **kwargs})
    assert info.value.key == key and "\n" not in str(info.value)


def test_class_split_is_class_disjoint_seeded_and_complete() -> None:
    y = np.repeat(np.arange(40), 5)
    parts = class_split(y, val=0.15, novel=10, seed=1)
    classes = {part: set(np.unique(y[idx]).tolist()) for part, idx in parts.items()}
    assert (len(classes["train"]), len(classes["val"]), len(classes["test"])) == (24, 6, 10)
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not classes[first] & classes[second]
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(len(y)))
    again, other = class_split(y, val=0.15, novel=10, seed=1), class_split(y, val=0.15, novel=10, seed=2)
    assert all(np.array_equal(parts[p], again[p]) for p in parts)
    assert not np.array_equal(parts["test"], other["test"])


@pytest.mark.parametrize(("kwargs", "key"), [({"val": 0.5, "novel": 0.5}, "split"), ({"novel": 1.5}, "split.novel"),
                                             ({"val": 0}, "split.val"), ({"disjoint_classes": False}, "split.disjoint_classes")])
def test_impossible_class_splits_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        class_split(np.repeat(np.arange(10), 3), **kwargs)
    assert info.value.key == key


def test_split_stage_accepts_class_split_but_holdout_still_needs_every_class(compose) -> None:
    y = np.repeat(np.arange(20), 5)
    parts = split_dataset(compose("data=glyphs", "split=classes"), y)
    assert not set(y[parts["train"]]) & set(y[parts["test"]])
    with pytest.raises(ConfigError, match="no samples in the"):
        split_dataset(compose("split=holdout", "split.stratify=false", "split.test=0.05"), np.repeat(np.arange(20), 2))


def test_glyphs_train_a_plain_classifier(compose, tmp_path) -> None:
    cfg = compose("data=glyphs", "data.source.classes=8", "data.source.samples=10", "data.source.size=16",
                  "backbone.channels=[16,16]", "trainer.max_epochs=2", "threads=1", "logger.experiment_name=glyphs",
                  "trainer.enable_progress_bar=false")
    result = train_and_test(cfg, tmp_path / "out", tmp_path)
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "glyphs"
    assert 0.0 <= result["test/acc"] <= 1.0
