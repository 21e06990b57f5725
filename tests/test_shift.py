"""Distribution shift: corruptions, label-shift resampling, the prior correction, the summaries (known values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from labline.core.errors import ConfigError
from labline.data.corruptions import Contrast, GaussianBlur, GaussianNoise, Rotation, Translation
from labline.data.shifts import Corruptions, CrossDataset, LabelShift, TestSet, resample_to_priors, saerens_em
from labline.data.stroke_digits import stroke_digits

CORRUPTIONS = {
    "gaussian_noise": GaussianNoise([0.08, 0.12, 0.18, 0.26, 0.38]),
    "gaussian_blur": GaussianBlur([0.4, 0.6, 0.7, 0.8, 1.0]),
    "contrast": Contrast([0.75, 0.5, 0.4, 0.3, 0.15]),
    "rotation": Rotation([10, 20, 30, 45, 60]),
    "translation": Translation([0.0625, 0.125, 0.1875, 0.25, 0.3125]),
}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Eight real digits in [0, 1]."""
    return torch.from_numpy(load_digits().images[:8, None].astype(np.float32) / 16.0)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_keeps_shape_and_range_grows_with_severity_and_is_seeded(images: torch.Tensor, name: str) -> None:
    corruption = CORRUPTIONS[name]
    assert torch.equal(corruption(images, 0, _generator()), images), "severity 0 is the clean image"
    distances = []
    for severity in (1, 5):
        out = corruption(images, severity, _generator())
        assert out.shape == images.shape and out.dtype == images.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(out, corruption(images, severity, _generator())), "same seed, same corrupted images"
        distances.append(float((out - images).abs().mean()))
    assert 0 < distances[0] < distances[1], f"{name}: severity 5 must move the images further than severity 1"


def test_corruption_values_on_a_fixed_image() -> None:
    flat = torch.full((1, 1, 8, 8), 0.5)
    bar = torch.zeros(1, 1, 8, 8)
    bar[..., 3:5, :] = 1.0
    # contrast 0.4 around the mean 0.25: 1 -> 0.55, 0 -> 0.15
    assert torch.allclose(Contrast([0.4])(bar, 1, _generator())[0, 0, 3:5], torch.full((2, 8), 0.55))
    assert torch.allclose(Contrast([0.4])(bar, 1, _generator())[0, 0, 0], torch.full((8,), 0.15))
    # a blur of a constant image is that constant (replicated edges), the noise std is the severity's
    assert torch.allclose(GaussianBlur([1.0])(flat, 1, _generator()), flat)
    noise = GaussianNoise([0.1])(torch.full((1, 1, 200, 200), 0.5), 1, _generator()) - 0.5
    assert abs(float(noise.std()) - 0.1) < 0.005
    # a bar rotated by 90 degrees stands upright; shifted by a whole pixel it moves by one row or column
    upright = Rotation([90])(bar, 1, _generator())[0, 0]
    assert torch.allclose(upright[:, 3:5], torch.ones(8, 2), atol=1e-5) and float(upright[:, 0].abs().max()) < 1e-5
    assert float(Translation([1 / 8])(bar, 1, _generator()).sum()) == pytest.approx(float(bar.sum()), rel=0.15)


def test_bad_severities_are_one_line() -> None:
    with pytest.raises(ConfigError, match="severities"):
        GaussianNoise([0.1, -1])
    with pytest.raises(ConfigError, match="out of range"):
        GaussianNoise([0.1])(torch.zeros(1, 1, 4, 4), 2, _generator())


def _test_set(n_per_class: int = 30, classes: int = 3) -> TestSet:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.uniform(0, 16, size=(len(y), 1, 8, 8)).astype(np.float32)
    return TestSet(x, y, [str(c) for c in range(classes)], 0.0, 16.0, np.full(classes, 1 / classes))


def test_corruptions_family_keeps_units_and_names_every_set() -> None:
    test = _test_set()
    family = Corruptions({"contrast": Contrast([0.5, 0.25]), "noise": GaussianNoise([0.1])}, seed=3)
    sets = list(family.sets(test))
    assert [s.name for s in sets] == ["contrast/1", "contrast/2", "noise/1"]
    assert all(s.x.shape == test.x.shape and s.x.min() >= 0 and s.x.max() <= 16 for s in sets)
    again = list(Corruptions({"contrast": Contrast([0.5, 0.25]), "noise": GaussianNoise([0.1])}, seed=3).sets(test))
    assert all(np.array_equal(a.x, b.x) for a, b in zip(sets, again, strict=True))
    other_seed = next(s for s in Corruptions({"noise": GaussianNoise([0.1])}, seed=4).sets(test))
    assert not np.array_equal(other_seed.x, sets[2].x)


def test_mca_and_drop_arithmetic() -> None:
    family = Corruptions({"a": Contrast([0.5, 0.25]), "b": GaussianNoise([0.1, 0.2])})
    scores = {"a/1": {"acc": 0.9}, "a/2": {"acc": 0.7}, "b/1": {"acc": 0.6}, "b/2": {"acc": 0.2}}
    summary = family.summary(scores, {"acc": 0.8})
    assert summary["a/acc"] == pytest.approx(0.8) and summary["b/acc"] == pytest.approx(0.4)
    assert summary["mca"] == pytest.approx(0.6) and summary["mce"] == pytest.approx(0.4)
    assert summary["drop"] == pytest.approx(0.2) and summary["relative_drop"] == pytest.approx(0.25)
    rows, columns, table = family.grid(scores)
    assert rows == ["a", "b"] and columns == ["1", "2"] and np.allclose(table, [[0.9, 0.7], [0.6, 0.2]])


def test_resampling_gives_the_asked_counts_deterministically() -> None:
    y = np.repeat(np.arange(4), 25)
    idx = resample_to_priors(y, np.array([0.5, 0.3, 0.2, 0.0]), 10, np.random.default_rng(1))
    assert np.bincount(y[idx], minlength=4).tolist() == [5, 3, 2, 0]
    assert np.array_equal(idx, resample_to_priors(y, np.array([0.5, 0.3, 0.2, 0.0]), 10, np.random.default_rng(1)))
    # largest remainder: 7 * (1/3, 1/3, 1/3) -> 3, 2, 2 (sums to the size asked)
    assert np.bincount(y[resample_to_priors(y, np.array([1, 1, 1, 0]), 7, np.random.default_rng(0))]).sum() == 7
    # more samples of a class than the split holds: drawn with replacement
    assert np.bincount(y[resample_to_priors(y, np.array([1.0, 0, 0, 0]), 60, np.random.default_rng(0))])[0] == 60


def test_label_shift_sets_follow_their_priors_and_are_seeded() -> None:
    test = _test_set(n_per_class=40)
    family = LabelShift(alphas=[0.5], draws=2, priors=[[0.6, 0.4, 0.0]], size=50, seed=0)
    sets = list(family.sets(test))
    assert [s.name for s in sets] == ["alpha0.5_0", "alpha0.5_1", "priors0"]
    assert np.bincount(sets[2].y, minlength=3).tolist() == [30, 20, 0]
    assert sets[2].info["prior_tv"] == pytest.approx(0.5 * (abs(0.6 - 1 / 3) + abs(0.4 - 1 / 3) + 1 / 3))
    again = list(LabelShift(alphas=[0.5], draws=2, priors=[[0.6, 0.4, 0.0]], size=50, seed=0).sets(test))
    assert all(np.array_equal(a.y, b.y) and np.array_equal(a.x, b.x) for a, b in zip(sets, again, strict=True))
    assert not np.array_equal(np.bincount(sets[0].y, minlength=3), np.bincount(sets[1].y, minlength=3))
    with pytest.raises(ConfigError, match="priors"):
        list(LabelShift(alphas=[], priors=[[1.0, 0.0]]).sets(test))


def test_em_recovers_new_priors_and_corrects_the_classifier() -> None:
    """Two unit-variance Gaussians at -1 and +1, posteriors exact under priors (0.5, 0.5); the test set is drawn
    with priors (0.8, 0.2): EM estimates them, and the corrected classifier beats the uncorrected one."""
    rng = np.random.default_rng(0)
    n = 20000
    y = (rng.uniform(size=n) < 0.2).astype(int)
    x = rng.normal(np.where(y == 1, 1.0, -1.0), 1.0)
    likelihood = np.stack([np.exp(-0.5 * (x + 1) ** 2), np.exp(-0.5 * (x - 1) ** 2)], 1)
    probs = likelihood / likelihood.sum(1, keepdims=True)
    priors, corrected = saerens_em(probs, np.array([0.5, 0.5]))
    assert priors == pytest.approx([0.8, 0.2], abs=0.015)
    assert np.mean(corrected.argmax(1) == y) > np.mean(probs.argmax(1) == y) + 0.03
    # one-hot probabilities: the estimate is the predicted class frequencies, in one step
    onehot = np.eye(3)[[0, 0, 1, 2]]
    assert saerens_em(onehot, np.full(3, 1 / 3))[0] == pytest.approx([0.5, 0.25, 0.25])


def test_stroke_digits_are_digits_in_sklearn_units_and_a_mismatch_is_refused() -> None:
    ds = stroke_digits(per_class=3, seed=0)
    assert ds.x.shape == (30, 1, 8, 8) and ds.classes == [str(d) for d in range(10)]
    assert ds.x.min() == 0 and ds.x.max() == 16 and np.array_equal(ds.x, np.round(ds.x))
    assert np.array_equal(ds.x, stroke_digits(per_class=3, seed=0).x)
    family = CrossDataset(ds, "stroke_digits")
    (only,) = family.sets(TestSet(ds.x, ds.y, ds.classes, 0.0, 16.0, np.full(10, 0.1)))
    assert only.name == "stroke_digits" and len(only.y) == 30
    with pytest.raises(ConfigError, match="shift=cross_dataset"):
        list(family.sets(_test_set()))
