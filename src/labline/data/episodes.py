"""Few-shot episodes over class-disjoint splits.

An episode is a small classification problem: ``way`` classes drawn from one
part of the split, ``shot`` labelled support samples and ``query`` samples to
classify per class, with labels 0 .. way-1 local to the episode. Training
episodes come from the base classes (train part) and are redrawn every epoch
from (seed, epoch), so a resumed run sees the episodes the uninterrupted one
saw; validation and test episodes are drawn once from the seed and are the same
for every epoch and every method, which makes their accuracies comparable.

Impossible requests (more ways than a part has classes, more shots plus
queries than a class has samples, parts that share classes) are
``ConfigError``s raised when the datamodule is built, before any run exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from labline.core.errors import ConfigError
from labline.data.datamodule import ArrayDataModule
from labline.data.pipeline import ProcessedData

Episode = dict[str, torch.Tensor]
# What each part's classes are called, and a stream id per part so their episodes never coincide.
ROLES = {"train": "base", "val": "validation", "test": "novel"}
STREAMS = {"train": 0, "val": 1, "test": 2}


class EpisodeSampler(Sampler[np.ndarray]):
    """Yields one ``(way, shot + query)`` array of sample indices per episode, a row per class.

    Without ``set_epoch`` every pass yields the same episodes (validation and test); ``EpochEpisodes``
    draws new ones per epoch.
    """

    def __init__(self, y: np.ndarray, pool: np.ndarray, way: int, per_class: int, episodes: int, seed: int, part: str):
        labels = y[pool]
        self.by_class = [pool[labels == c] for c in np.unique(labels)]
        self.way, self.per_class, self.episodes = way, per_class, episodes
        self.seed, self.stream = seed, STREAMS[part]

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.stream])

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = self._rng()
        for _ in range(self.episodes):
            chosen = rng.choice(len(self.by_class), self.way, replace=False)
            yield np.stack([rng.choice(self.by_class[c], self.per_class, replace=False) for c in chosen])

    def __len__(self) -> int:
        return self.episodes


class EpochEpisodes(EpisodeSampler):
    """Training episodes: new ones every epoch, decided by (seed, epoch) alone (Lightning calls ``set_epoch``)."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.stream, self.epoch])


class EpisodeSet(Dataset):
    """Turns an episode's index array into tensors; support and query are class-major with local labels."""

    def __init__(self, x: torch.Tensor, y: np.ndarray, shot: int):
        self.x, self.y, self.shot = x, y, shot

    def __getitem__(self, index: np.ndarray) -> Episode:
        way, per_class = index.shape
        local = torch.arange(way)
        support, query = index[:, :self.shot], index[:, self.shot:]
        return {"support": self.x[support.reshape(-1)], "support_y": local.repeat_interleave(self.shot),
                "query": self.x[query.reshape(-1)], "query_y": local.repeat_interleave(per_class - self.shot),
                "classes": torch.from_numpy(self.y[index[:, 0]]), "support_index": torch.from_numpy(support),
                "query_index": torch.from_numpy(query)}


def _positive(value: Any, key: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"task.datamodule.{key}", f"must be an integer >= {least}, got {value!r}")
    return value


class EpisodeDataModule(ArrayDataModule):
    """Episodes of ``way`` classes x (``shot`` + ``query``) samples: training from the base classes, validation
    from the validation classes, test from the novel classes.

    ``train_way`` / ``train_query`` (null: as evaluated) make training episodes harder or larger than the
    test ones, as ProtoNets did (60-way training for 5-way tests). With ``pretrain: true`` training is
    plain mini-batches over the base classes instead (labels 0 .. base-1; ``num_classes`` is their count),
    which is what the fine-tuning baseline pretrains on. Augmentation applies to training inputs only.
    """

    def __init__(self, data: ProcessedData, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 augment: Any = None, way: int = 5, shot: int = 1, query: int = 15, train_way: int | None = None,
                 train_query: int | None = None, train_episodes: int = 100, val_episodes: int = 100,
                 test_episodes: int = 600, pretrain: bool = False):
        super().__init__(data, batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        self.way, self.shot, self.query = _positive(way, "way", 2), _positive(shot, "shot"), _positive(query, "query")
        self.train_way = self.way if train_way is None else _positive(train_way, "train_way", 2)
        self.train_query = self.query if train_query is None else _positive(train_query, "train_query")
        self.train_keys = ("way" if train_way is None else "train_way", "query" if train_query is None else "train_query")
        self.episodes = {"train": _positive(train_episodes, "train_episodes"), "val": _positive(val_episodes, "val_episodes"),
                         "test": _positive(test_episodes, "test_episodes")}
        if not isinstance(pretrain, bool):
            raise ConfigError("task.datamodule.pretrain", f"must be true or false, got {pretrain!r}")
        self.pretrain = pretrain
        self.part_classes = {part: np.unique(data.y[idx]) for part, idx in data.parts.items()}
        self._check_disjoint()
        for part in ("val", "test") if pretrain else ("train", "val", "test"):
            self._check_part(part)
        base = self.part_classes["train"]
        x_train, y_train = self.sets["train"].tensors
        self.sets["train"] = TensorDataset(x_train, torch.from_numpy(np.searchsorted(base, y_train.numpy())))
        self.x = torch.from_numpy(np.ascontiguousarray(data.x))

    def _check_disjoint(self) -> None:
        for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = np.intersect1d(self.part_classes[first], self.part_classes[second])
            if len(shared):
                raise ConfigError("split", f"few-shot parts must not share classes, but {len(shared)} classes have samples "
                                  f"in both {first} and {second}", "a class-disjoint split: split=classes")

    def _shape(self, part: str) -> tuple[int, int, str, str]:
        """(way, query) of ``part``'s episodes and the keys that set them."""
        if part == "train":
            return self.train_way, self.train_query, *self.train_keys
        return self.way, self.query, "way", "query"

    def _check_part(self, part: str) -> None:
        way, query, way_key, query_key = self._shape(part)
        classes, role = self.part_classes[part], ROLES[part]
        if way > len(classes):
            raise ConfigError(f"task.datamodule.{way_key}", f"{way}-way episodes need {way} classes, but the {part} part "
                              f"has {len(classes)} ({role} classes)", f"{way_key} <= {len(classes)}, or more {role} classes")
        counts = np.bincount(self.data.y[self.data.parts[part]])[classes]
        fewest = int(counts.min())
        if self.shot + query > fewest:
            key = "shot" if self.shot >= fewest else query_key
            name = self.data.classes[int(classes[counts.argmin()])]
            raise ConfigError(f"task.datamodule.{key}", f"{self.shot} shots + {query} queries need {self.shot + query} "
                              f"samples per class, but {role} class '{name}' has {fewest}", f"shot + {query_key} <= {fewest}")

    @property
    def num_classes(self) -> int:
        """Base classes: the width of a classifier pretrained on the train part."""
        return len(self.part_classes["train"])

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, dict) or self.augment is None or self.trainer is None or not self.trainer.training:
            return super().on_after_batch_transfer(batch, dataloader_idx)
        return {**batch, "support": self.augment(batch["support"]), "query": self.augment(batch["query"])}

    def episode_loader(self, part: str) -> DataLoader:
        way, query, _, _ = self._shape(part)
        kind = EpochEpisodes if part == "train" else EpisodeSampler
        sampler = kind(self.data.y, self.data.parts[part], way, self.shot + query, self.episodes[part], self.seed, part)
        return DataLoader(EpisodeSet(self.x, self.data.y, self.shot), sampler=sampler, batch_size=None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        return super().train_dataloader() if self.pretrain else self.episode_loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.episode_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.episode_loader("test")
