"""Few labels and many unlabeled samples: the labeled / unlabeled split of the training part, and its datamodule.

``data.labels_per_class=N`` keeps N labels per class of the training part (``data.labeled_fraction=f`` a
stratified fraction), drawn with the run's seed; the rest of the training part becomes the ``unlabeled``
part, whose labels no task trains on (the semi-supervised tasks read them only to report how often their
pseudo-labels are right). The validation and test parts are untouched, so every task, a supervised baseline
included, sees the same labels with the same override, and is tested on the same examples.

A user's own unlabeled pool (``+data.unlabeled_source=pool.npz``, an ``.npz`` with an array ``x``, or a node
with a ``_target_`` returning a ``RawDataset``) joins the ``unlabeled`` part with the label ``UNLABELED``
(-1, scikit-learn's mark for unlabeled samples), normalised with the statistics fitted on the training part.

What makes runs comparable is recorded on each run (``labeled_tags``): how many labeled and unlabeled samples
it had and a hash of both index sets.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.core.io import load_npz
from labline.core.seeding import epoch_seed
from labline.data.datamodule import ArrayDataModule, Augment
from labline.data.pipeline import ProcessedData, load_processed, load_source

UNLABELED = -1
PART = "unlabeled"
VIEWS = ("weak", "strong", "clean")


def labeled_split(y: np.ndarray, train: np.ndarray, labels_per_class: int | None = None,
                  labeled_fraction: float | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(labeled, unlabeled)`` indices of ``train``: N per class, or a stratified fraction, seeded.

    Each class's training indices are shuffled by one generator seeded with ``seed`` and the first N (or
    ``round(fraction * count)``, at least one) are kept, so a larger N keeps a superset of a smaller one.
    """
    if (labels_per_class is None) == (labeled_fraction is None):
        raise ConfigError("data.labels_per_class", "set exactly one of data.labels_per_class and data.labeled_fraction",
                          "data.labels_per_class=5, or data.labeled_fraction=0.1")
    if labels_per_class is not None and (isinstance(labels_per_class, bool) or not isinstance(labels_per_class, int)
                                         or labels_per_class < 1):
        raise ConfigError("data.labels_per_class", f"must be a positive integer, got {labels_per_class!r}", "e.g. 5")
    if labeled_fraction is not None and not (isinstance(labeled_fraction, (int, float)) and 0.0 < labeled_fraction < 1.0):
        raise ConfigError("data.labeled_fraction", f"must be a fraction in (0, 1), got {labeled_fraction!r}", "e.g. 0.1")
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(y[train]):
        members = rng.permutation(train[y[train] == label])
        count = labels_per_class if labels_per_class is not None else max(1, round(labeled_fraction * len(members)))
        if count > len(members):
            raise ConfigError("data.labels_per_class", f"class {label} has only {len(members)} training samples, "
                              f"fewer than {count}", f"at most {int(np.bincount(y[train]).min())}")
        kept.append(members[:count])
    labeled = np.sort(np.concatenate(kept))
    return labeled, np.setdiff1d(train, labeled)


def _pool(cfg: DictConfig, data: ProcessedData) -> np.ndarray:
    """The user's unlabeled inputs, normalised like the training part (statistics refitted on its raw inputs)."""
    node = cfg.data.get("unlabeled_source")
    if isinstance(node, str):
        x = load_npz(Path(node), ("x",), "an .npz file with an array x of unlabeled inputs")["x"].astype(np.float32)
    else:
        x = instantiate(node, "data.unlabeled_source").x.astype(np.float32)
    if x.shape[1:] != data.x.shape[1:] or len(x) == 0:
        raise ConfigError("data.unlabeled_source", f"inputs of shape {x.shape} do not match the dataset's "
                          f"{tuple(data.x.shape[1:])}", f"an array x of shape (N, {', '.join(map(str, data.x.shape[1:]))})")
    if not np.isfinite(x).all():
        raise ConfigError("data.unlabeled_source", "contains NaN or inf", "finite values only")
    raw = load_source(cfg).x
    return instantiate(cfg.preprocess, "preprocess").fit(raw[data.parts["train"]]).transform(x)


def with_labels(cfg: DictConfig, data: ProcessedData) -> ProcessedData:
    """``data`` with its training part cut down to the labeled samples and an ``unlabeled`` part, as configured;
    unchanged when neither labels are dropped nor a pool is given."""
    per_class, fraction = cfg.data.get("labels_per_class"), cfg.data.get("labeled_fraction")
    pool = cfg.data.get("unlabeled_source")
    if per_class is None and fraction is None and pool is None:
        return data
    train = data.parts["train"]
    if per_class is None and fraction is None:
        labeled, unlabeled = train, train[:0]
    else:
        labeled, unlabeled = labeled_split(data.y, train, per_class, fraction, int(cfg.seed))
    x, y = data.x, data.y
    if pool is not None:
        extra = _pool(cfg, data)
        unlabeled = np.concatenate([unlabeled, np.arange(len(x), len(x) + len(extra))])
        x, y = np.concatenate([x, extra]), np.concatenate([y, np.full(len(extra), UNLABELED, dtype=y.dtype)])
    return replace(data, x=x, y=y, parts={**data.parts, "train": labeled, PART: unlabeled})


def load_training_data(cfg: DictConfig, root: Path) -> ProcessedData:
    """What a run trains on: the processed data, with the labels the config keeps."""
    return with_labels(cfg, load_processed(cfg, root))


def labeled_tags(data: ProcessedData) -> dict[str, str]:
    """``labeled_count``, ``unlabeled_count`` and ``labels_hash`` (which samples were labeled and which were not)."""
    if PART not in data.parts:
        return {}
    labeled, unlabeled = data.parts["train"], data.parts[PART]
    digest = hashlib.sha256(data.fingerprint.encode() + labeled.astype(np.int64).tobytes() + b"|"
                            + unlabeled.astype(np.int64).tobytes() + data.y[labeled].astype(np.int64).tobytes())
    return {"labeled_count": str(len(labeled)), "unlabeled_count": str(len(unlabeled)), "labels_hash": digest.hexdigest()[:16]}


class CycleShuffle(Sampler[int]):
    """``length`` indices from back-to-back permutations of ``range(size)``, drawn from (seed, epoch) only, so a
    small labeled set is cycled through as often as the unlabeled set needs, without repeating one order."""

    def __init__(self, size: int, length: int, seed: int):
        self.size, self.length, self.seed, self.epoch = size, length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        rounds = -(-self.length // self.size)
        return iter(torch.cat([torch.randperm(self.size, generator=generator) for _ in range(rounds)])[:self.length].tolist())

    def __len__(self) -> int:
        return self.length


def check_views(augment: Augment | None, sample: torch.Tensor, key: str) -> None:
    """A copy of ``augment`` run on two samples: a misfit is a one-line error before training."""
    if augment is None:
        return
    try:
        out = copy.deepcopy(augment)(sample.clone())
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(key, f"fails on a batch of shape {tuple(sample.shape)}: {' '.join(str(exc).split())}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != sample.dim() or out.shape[:2] != sample.shape[:2]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(key, f"turns a batch of shape {tuple(sample.shape)} into {got}", "an augmentation of image batches")


class SemiSupervisedDataModule(ArrayDataModule):
    """Training batches ``{"labeled": (x, y), "unlabeled": ([view, ...], y)}``: ``unlabeled_ratio`` unlabeled
    samples per labeled one (FixMatch's mu), as many batches of each per epoch (the smaller set cycles).

    The labeled batch gets the run's ``augment`` (the weak view); each unlabeled sample is served in the
    ``unlabeled_views`` the task asks for: ``weak`` (the run's augment), ``strong`` (the ``strong``
    augmentation) or ``clean``. An epoch is one pass over the larger of the two sets. Validation and test are
    the usual clean parts. The unlabeled labels (-1 for a user's pool) are for diagnostics only.
    """

    def __init__(self, data: ProcessedData, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 augment: Augment | None = None, unlabeled_ratio: int = 7, labeled_batch_size: int | None = None,
                 unlabeled_views: Sequence[str] = ("weak",), strong: Augment | None = None):
        super().__init__(data, batch_size, num_workers, seed, augment)
        if len(data.parts.get(PART, ())) == 0:
            raise ConfigError("data.labels_per_class", "this task learns from unlabeled data, but the run has none",
                              "data.labels_per_class=N, data.labeled_fraction=f or +data.unlabeled_source=pool.npz")
        for key, value, least in (("task.datamodule.unlabeled_ratio", unlabeled_ratio, 1),
                                  ("task.datamodule.labeled_batch_size", labeled_batch_size or 1, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(key, f"must be an integer >= {least}, got {value!r}")
        views = list(unlabeled_views)
        if not views or any(v not in VIEWS for v in views):
            raise ConfigError("task.datamodule.unlabeled_views", f"got {views}", f"a list of {', '.join(VIEWS)}")
        if "strong" in views and strong is None:
            raise ConfigError("task.datamodule.strong", "the task needs a strong view but none is configured",
                              "an augmentation node, e.g. the one of conf/augment/strong.yaml")
        check_views(strong, self.sets["train"].tensors[0][:2], "task.datamodule.strong")
        self.unlabeled_ratio, self.views, self.strong = unlabeled_ratio, views, strong
        self.labeled_batch_size = labeled_batch_size or batch_size
        self.samplers: list[CycleShuffle] = []

    def _cycled(self, part: str, batch: int, batches: int, seed: int) -> DataLoader:
        sampler = CycleShuffle(len(self.sets[part]), batch * batches, seed)
        self.samplers.append(sampler)
        return DataLoader(self.sets[part], batch_size=batch, sampler=sampler, generator=torch.Generator().manual_seed(seed),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory)

    def train_dataloader(self) -> CombinedLoader:
        labeled, unlabeled = self.labeled_batch_size, self.labeled_batch_size * self.unlabeled_ratio
        batches = max(-(-len(self.sets["train"]) // labeled), -(-len(self.sets[PART]) // unlabeled))
        self.samplers = []
        loaders = {"labeled": self._cycled("train", labeled, batches, self.seed),
                   "unlabeled": self._cycled(PART, unlabeled, batches, self.seed + 1)}
        return CombinedLoader(loaders, mode="min_size")

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for sampler in self.samplers:
            sampler.set_epoch(epoch)
        if self.strong is not None and hasattr(self.strong, "set_epoch"):
            self.strong.set_epoch(epoch)

    def _view(self, name: str, x: torch.Tensor) -> torch.Tensor:
        chosen = {"weak": self.augment, "strong": self.strong, "clean": None}[name]
        return x if chosen is None else chosen(x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is None or not self.trainer.training or not isinstance(batch, dict):
            return super().on_after_batch_transfer(batch, dataloader_idx)
        (x, y), (u, u_y) = batch["labeled"], batch["unlabeled"]
        return {"labeled": (self._view("weak", x), y), "unlabeled": ([self._view(v, u) for v in self.views], u_y)}
