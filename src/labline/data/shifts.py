"""Shifted versions of a run's test split: covariate corruptions, label (prior) shift, another dataset.

A model is trained and tested on one distribution; distribution shift asks how it does when the test data
come from another one. Each family here is one class and one YAML in ``conf/shift/`` (``_target_``):

- ``Corruptions`` (covariate shift, ImageNet-C's methodology): every corruption of
  ``labline.data.corruptions`` at every severity; summarised by the mean corruption accuracy (mCA, the mean
  over corruptions and severities), its drop from the clean accuracy, and the drop relative to it;
- ``LabelShift``: the test split resampled to other class priors (Dirichlet draws, or given priors), with the
  prior-corrected classifier of Saerens, Latinne & Decaestecker (2002) beside the plain one;
- ``CrossDataset``: the whole of another dataset with the same classes and image shape (the run's own
  normalisation applied), e.g. digits drawn by a stroke generator for a model trained on handwritten ones.

A family yields ``ShiftedSet``\\ s of raw images (the dataset's own units); the caller normalises them with the
run's preprocessing, predicts, and scores each set; ``predictions`` lets a family score extra classifiers
derived from the model's probabilities, ``summary`` turns the per-set scores into the family's own numbers
and ``grid`` into a table to draw (corruption x severity). Every random draw is seeded by the family's
``seed`` (not the run's), so runs of different seeds are evaluated on identical shifted sets.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from labline.core.errors import ConfigError
from labline.data.corruptions import Corruption
from labline.data.raw import RawDataset


@dataclass
class TestSet:
    """The clean test part in raw units, with what shifting it needs to know about the run's data."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    # the value range of the training images (what corruptions map to [0, 1])
    low: float
    high: float
    # class frequencies of the training part: the priors the model's probabilities are calibrated to
    train_priors: np.ndarray


@dataclass
class ShiftedSet:
    """One shifted test set: its name in the metric keys (``gaussian_noise/3``), images and labels."""

    name: str
    x: np.ndarray
    y: np.ndarray
    info: dict[str, float] = field(default_factory=dict)


Scores = dict[str, dict[str, float]]


class Shift:
    """A family of shifted test sets."""

    def sets(self, test: TestSet) -> Iterator[ShiftedSet]:
        raise NotImplementedError

    def predictions(self, shifted: ShiftedSet, probs: np.ndarray, test: TestSet) -> dict[str, np.ndarray]:
        """Named class probabilities to score on ``shifted`` (``""``: the model's own); a family may also add
        numbers about the set to ``shifted.info`` here (how well it estimated the set's priors)."""
        return {"": probs}

    def summary(self, scores: Scores, clean: dict[str, float]) -> dict[str, float]:
        """The family's own numbers from each set's scores and the clean test scores."""
        return {}

    def grid(self, scores: Scores) -> tuple[list[str], list[str], np.ndarray] | None:
        """``(rows, columns, accuracies)`` to draw as a heat-map, or None."""
        return None


def _seed(*parts: int | str) -> int:
    """A generator seed from the family's seed and names, independent of which other sets are evaluated."""
    words = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


class Corruptions(Shift):
    """Each corruption (name -> ``Corruption``) at each of its severities."""

    def __init__(self, corruptions: dict[str, Corruption], seed: int = 0):
        if not corruptions:
            raise ConfigError(
                "shift.corruptions.corruptions",
                "names no corruption",
                "gaussian_noise, gaussian_blur, contrast, rotation, translation",
            )
        for name, corruption in corruptions.items():
            if not isinstance(corruption, Corruption):
                raise ConfigError(
                    f"shift.corruptions.corruptions.{name}._target_",
                    f"built a {type(corruption).__name__}",
                    "a subclass of labline.data.corruptions.Corruption",
                )
        self.corruptions = dict(corruptions)
        self.seed = seed

    def sets(self, test: TestSet) -> Iterator[ShiftedSet]:
        if test.x.ndim != 4:
            raise ConfigError(
                "shift=corruptions",
                f"corrupts images (N, C, H, W), but the run's inputs are {test.x.shape[1:]}",
                "a run on image data (digits, shapes, glyphs, image folders)",
            )
        span = test.high - test.low if test.high > test.low else 1.0
        clean = torch.from_numpy(((test.x - test.low) / span).astype(np.float32))
        for name, corruption in self.corruptions.items():
            for severity in range(1, len(corruption.severities) + 1):
                generator = torch.Generator().manual_seed(_seed(self.seed, name))
                x = corruption(clean, severity, generator).numpy() * span + test.low
                yield ShiftedSet(f"{name}/{severity}", x.astype(test.x.dtype), test.y)

    def summary(self, scores: Scores, clean: dict[str, float]) -> dict[str, float]:
        """Per corruption its mean accuracy over severities; mCA, ``drop`` (clean - mCA) and ``relative_drop``
        (drop / clean: the share of the clean accuracy lost, comparable between models of different clean
        accuracy). ImageNet-C's mCE normalises errors by AlexNet's; labline has no reference model, so the
        unnormalised mean corruption error is ``1 - mca``."""
        per = {
            name: float(np.mean([scores[f"{name}/{s}"]["acc"] for s in range(1, len(c.severities) + 1)]))
            for name, c in self.corruptions.items()
        }
        mca = float(np.mean([scores[k]["acc"] for k in scores]))
        drop = clean["acc"] - mca
        return {
            **{f"{name}/acc": v for name, v in per.items()},
            "mca": mca,
            "mce": 1.0 - mca,
            "drop": drop,
            "relative_drop": drop / clean["acc"] if clean["acc"] > 0 else 0.0,
        }

    def grid(self, scores: Scores) -> tuple[list[str], list[str], np.ndarray]:
        levels = max(len(c.severities) for c in self.corruptions.values())
        table = np.full((len(self.corruptions), levels), np.nan)
        for i, (name, c) in enumerate(self.corruptions.items()):
            for s in range(1, len(c.severities) + 1):
                table[i, s - 1] = scores[f"{name}/{s}"]["acc"]
        return list(self.corruptions), [str(s) for s in range(1, levels + 1)], table


def resample_to_priors(y: np.ndarray, priors: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``size`` samples of ``y`` whose class counts follow ``priors``: ``size * priors`` rounded by
    largest remainder (so they sum to ``size``), each class drawn with replacement from its own samples
    (a class can be asked for more samples than the test split holds)."""
    priors = np.asarray(priors, dtype=np.float64)
    exact = size * priors / priors.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: size - counts.sum()]] += 1
    chosen = []
    for k, count in enumerate(counts):
        members = np.flatnonzero(y == k)
        if count and not len(members):
            raise ConfigError("shift.label", f"class {k} has no test sample to draw {count} from", "priors 0 for it")
        chosen.append(rng.choice(members, size=count, replace=True) if count else members[:0])
    return np.concatenate(chosen)


def saerens_em(
    probs: np.ndarray, train_priors: np.ndarray, tol: float = 1e-8, max_iter: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """``(test priors, corrected probabilities)``: Saerens et al. (2002)'s EM estimate of new class priors.

    A classifier's probabilities ``p(k|x)`` are calibrated to the training priors ``pi``. Under label shift
    (``p(x|k)`` unchanged, priors now ``q``) Bayes' rule gives ``p'(k|x) ~ p(k|x) q_k / pi_k``; ``q`` is unknown,
    and EM alternates that correction (E) with ``q = mean of p'(k|x)`` over the test samples (M), increasing
    the likelihood of the unlabeled test set at each step, from ``q = pi``."""
    probs = probs / probs.sum(1, keepdims=True)
    train = np.asarray(train_priors, dtype=np.float64)
    priors = train.copy()
    for _ in range(max_iter):
        corrected = probs * (priors / train)
        corrected /= corrected.sum(1, keepdims=True)
        updated = corrected.mean(0)
        done = np.abs(updated - priors).max() < tol
        priors = updated
        if done:
            break
    corrected = probs * (priors / train)
    return priors, corrected / corrected.sum(1, keepdims=True)


class LabelShift(Shift):
    """The test split resampled (``size`` samples, default its own size) to new class priors: one set per
    Dirichlet draw (``alphas``, ``draws`` each; a small alpha concentrates the priors on few classes) and per
    given prior vector (``priors``). With ``correct``, the Saerens EM-corrected classifier is scored too."""

    def __init__(
        self,
        alphas: Sequence[float] = (10.0, 1.0, 0.1),
        draws: int = 1,
        priors: Sequence[Sequence[float]] = (),
        size: int | None = None,
        correct: bool = True,
        seed: int = 0,
    ):
        if any(isinstance(a, bool) or not isinstance(a, (int, float)) or a <= 0 for a in alphas):
            raise ConfigError("shift.label.alphas", f"must be positive numbers, got {list(alphas)}", "[10.0, 1.0, 0.1]")
        if not alphas and not priors:
            raise ConfigError("shift.label", "names no alphas and no priors", "alphas: [1.0] or priors: [[0.5, 0.5, ...]]")
        self.alphas, self.draws, self.size, self.correct, self.seed = [float(a) for a in alphas], draws, size, correct, seed
        self.priors = [np.asarray(p, dtype=np.float64) for p in priors]

    def _targets(self, k: int) -> Iterator[tuple[str, np.ndarray]]:
        for alpha in self.alphas:
            for draw in range(self.draws):
                rng = np.random.default_rng(_seed(self.seed, f"alpha{alpha:g}", draw))
                yield f"alpha{alpha:g}_{draw}", rng.dirichlet(np.full(k, alpha))
        for i, given in enumerate(self.priors):
            if len(given) != k or np.any(given < 0) or given.sum() <= 0:
                raise ConfigError(f"shift.label.priors[{i}]", f"must be {k} non-negative numbers, not all 0", f"{k} class priors")
            yield f"priors{i}", given / given.sum()

    def sets(self, test: TestSet) -> Iterator[ShiftedSet]:
        size = self.size or len(test.y)
        for name, target in self._targets(len(test.classes)):
            idx = resample_to_priors(test.y, target, size, np.random.default_rng(_seed(self.seed, name, "draw")))
            # total variation distance between the training priors and the new ones: how far the priors moved
            shift = 0.5 * float(np.abs(target - test.train_priors).sum())
            yield ShiftedSet(name, test.x[idx], test.y[idx], {"prior_tv": shift})

    def predictions(self, shifted: ShiftedSet, probs: np.ndarray, test: TestSet) -> dict[str, np.ndarray]:
        if not self.correct:
            return {"": probs}
        estimated, corrected = saerens_em(probs, test.train_priors)
        true = np.bincount(shifted.y, minlength=len(test.classes)) / len(shifted.y)
        shifted.info["prior_error_em"] = 0.5 * float(np.abs(estimated - true).sum())
        return {"": probs, "corrected": corrected}

    def summary(self, scores: Scores, clean: dict[str, float]) -> dict[str, float]:
        keys = sorted({k for s in scores.values() for k in s if k.startswith(("acc", "f1_macro"))})
        return {k: float(np.mean([s[k] for s in scores.values()])) for k in keys}


class CrossDataset(Shift):
    """The whole of ``source`` (a dataset with the run's classes and image shape), named ``name``."""

    def __init__(self, source: RawDataset, name: str):
        if not isinstance(source, RawDataset):
            raise ConfigError("shift.cross_dataset.source._target_", f"built a {type(source).__name__}", "a dataset source")
        self.source, self.name = source, name

    def sets(self, test: TestSet) -> Iterator[ShiftedSet]:
        if self.source.classes != test.classes or self.source.x.shape[1:] != test.x.shape[1:]:
            raise ConfigError(
                "shift=cross_dataset",
                f"'{self.name}' has classes {self.source.classes} of shape "
                f"{self.source.x.shape[1:]}, the run's data classes {test.classes} of shape {test.x.shape[1:]}",
                "a run on data whose classes and image shape the pair's dataset shares (data=digits)",
            )
        yield ShiftedSet(self.name, self.source.x.astype(test.x.dtype), self.source.y)

    def summary(self, scores: Scores, clean: dict[str, float]) -> dict[str, float]:
        return {"drop": clean["acc"] - scores[self.name]["acc"]}
