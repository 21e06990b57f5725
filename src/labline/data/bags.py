"""Bags of instances for multiple-instance learning, built over the processed instance data.

In MIL only a bag carries a label (a slide is a bag of tiles). The instances still go
through labline's data stages (prepare, split, preprocess fitted on the train part), and
a *bag source* then groups them into bags per part. Every bag takes its instances from
one part only, so no test instance ever sits in a training bag, and the normalisation
statistics never saw a test bag.

Two sources, chosen by ``data.bags._target_``:

- ``TargetBags``: the MNIST-bags protocol of Ilse et al. (2018). Bag sizes are drawn from a
  configurable distribution, instances at random from the part, and a bag is positive iff
  it contains an instance of the target class.
- ``BagFile``: bring your own tiles. A CSV or JSON file assigns instances (indices into the
  dataset) to bags and gives each bag its label; pair it with the ``bag_holdout`` split,
  which splits whole bags, so each bag's instances land in one part.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from labline.core.errors import ConfigError
from labline.data.datamodule import DataModule
from labline.data.files import SPLIT_PARTS
from labline.data.pipeline import ProcessedData
from labline.data.samplers import EpochShuffle
from labline.data.splits import holdout

SIZE_DISTRIBUTIONS = ("normal", "uniform", "fixed")
FILE_COLUMNS = ("bag", "instance", "label")
# Validation and test bags are drawn from ``bags.seed`` alone, training bags from it and the run's seed: runs with
# different seeds train on different bags (as in Ilse et al.) but are all tested on the same bags.
PART_STREAM = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Bags:
    """The bags of one part: instance indices into ``ProcessedData.x``, one label per bag, and a name per bag."""

    members: list[np.ndarray]
    labels: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class BagSplit:
    parts: dict[str, Bags]
    classes: list[str]


class BagSource(Protocol):
    def __call__(self, data: ProcessedData, seed: int) -> BagSplit: ...


@dataclass(frozen=True)
class BagSize:
    """``normal``: round(N(mean, std)) clipped to [min, max]; ``uniform``: an integer in [min, max]; ``fixed``: mean."""

    distribution: str = "normal"
    mean: float = 10.0
    std: float = 2.0
    min: int = 2
    max: int = 50

    def __post_init__(self) -> None:
        if self.distribution not in SIZE_DISTRIBUTIONS:
            raise ConfigError("data.bags.size.distribution", f"unknown distribution '{self.distribution}'", SIZE_DISTRIBUTIONS)
        if not 1 <= self.min <= self.max:
            raise ConfigError("data.bags.size", f"needs 1 <= min <= max, got min={self.min}, max={self.max}")
        if self.std < 0:
            raise ConfigError("data.bags.size.std", f"must be >= 0, got {self.std}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.distribution == "uniform":
            return rng.integers(self.min, self.max + 1, size=n)
        if self.distribution == "fixed":
            return np.full(n, int(round(self.mean)))
        return np.clip(np.rint(rng.normal(self.mean, self.std, size=n)), self.min, self.max).astype(np.int64)


class TargetBags:
    """MNIST-bags (Ilse et al. 2018): random bags from each part, positive iff they contain the ``target`` class."""

    def __init__(self, target: int | str, train_bags: int = 50, val_bags: int = 100, test_bags: int = 1000,
                 size: Mapping[str, Any] | None = None, seed: int = 0):
        for key, count in (("train_bags", train_bags), ("val_bags", val_bags), ("test_bags", test_bags)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigError(f"data.bags.{key}", f"must be a positive integer, got {count!r}")
        self.target = str(target)
        self.counts = {"train": train_bags, "val": val_bags, "test": test_bags}
        unknown = sorted(set(size or {}) - set(BagSize.__dataclass_fields__))
        if unknown:
            raise ConfigError("data.bags.size", f"unknown keys {unknown}", sorted(BagSize.__dataclass_fields__))
        self.size = BagSize(**dict(size or {}))
        self.seed = seed

    def __call__(self, data: ProcessedData, seed: int) -> BagSplit:
        if self.target not in data.classes:
            raise ConfigError("data.bags.target", f"'{self.target}' is not a class of the dataset", data.classes)
        target = data.classes.index(self.target)
        parts = {}
        for part, count in self.counts.items():
            pool = data.parts[part]
            if len(pool) < self.size.min:
                raise ConfigError("data.bags.size.min", f"the {part} part has {len(pool)} instances, fewer than "
                                  f"the smallest bag ({self.size.min})", "a smaller size.min or larger split fractions")
            stream = [self.seed, PART_STREAM[part]] + ([seed] if part == "train" else [])
            rng = np.random.default_rng(stream)
            members = [np.sort(rng.choice(pool, size=min(int(n), len(pool)), replace=False))
                       for n in self.size.draw(rng, count)]
            labels = np.array([int((data.y[m] == target).any()) for m in members], dtype=np.int64)
            parts[part] = Bags(members, labels, [f"{part}-{i}" for i in range(count)])
        return BagSplit(parts, [f"no {self.target}", f"has {self.target}"])


def read_assignment(path: Path) -> dict[str, tuple[list[int], int]]:
    """``{bag: (instance indices, label)}`` from a CSV (header ``bag,instance,label``) or a JSON list of such objects."""
    if not path.exists():
        raise ConfigError(str(path), "bag assignment file not found", "a CSV or JSON file with columns bag, instance, label")
    try:
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text())
        else:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot be read ({type(exc).__name__})", "a CSV or JSON bag assignment") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and set(FILE_COLUMNS) <= set(r) for r in rows):
        raise ConfigError(str(path), "needs one row per instance with the fields bag, instance, label", FILE_COLUMNS)
    bags: dict[str, tuple[list[int], int]] = {}
    for number, row in enumerate(rows, start=1):
        where = f"{path} (row {number})"
        try:
            instance, label = int(row["instance"]), int(row["label"])
        except (TypeError, ValueError):
            raise ConfigError(where, "instance and label must be integers", "instance index, class index") from None
        members, known = bags.setdefault(str(row["bag"]), ([], label))
        if label != known:
            raise ConfigError(where, f"bag '{row['bag']}' has labels {known} and {label}", "one label per bag")
        members.append(instance)
    return bags


class BagFile:
    """Bags from an assignment file (bag id, instance index, bag label); labels are class indices 0..K-1.

    A bag belongs to the part that holds its instances; a bag split across parts would leak
    test tiles into training, so it is an error (use the ``bag_holdout`` split).
    """

    def __init__(self, path: str, classes: list[str] | None = None):
        self.path = Path(path)
        self.classes = None if classes is None else [str(c) for c in classes]

    def __call__(self, data: ProcessedData, seed: int) -> BagSplit:
        assignment = read_assignment(self.path)
        labels = sorted({label for _, label in assignment.values()})
        names = self.classes or [str(c) for c in range(labels[-1] + 1)]
        if labels[0] < 0 or labels[-1] >= len(names):
            raise ConfigError(str(self.path), f"bag labels span {labels[0]}..{labels[-1]} but there are {len(names)} classes",
                              "labels 0..K-1 with K class names")
        part_of = np.full(len(data.y), "", dtype=object)
        for part in SPLIT_PARTS:
            part_of[data.parts[part]] = part
        grouped: dict[str, list[tuple[str, np.ndarray, int]]] = {part: [] for part in SPLIT_PARTS}
        for bag, (members, label) in assignment.items():
            idx = np.array(sorted(set(members)), dtype=np.int64)
            if idx.min() < 0 or idx.max() >= len(data.y):
                raise ConfigError(str(self.path), f"bag '{bag}' names instances outside 0..{len(data.y) - 1}")
            parts = sorted(set(part_of[idx]) - {""})
            if len(parts) > 1:
                raise ConfigError(str(self.path), f"bag '{bag}' has instances in the {' and '.join(parts)} parts",
                                  "split._target_=labline.data.bags.bag_holdout, see experiment=mil_tiles")
            if parts:
                grouped[parts[0]].append((bag, idx, label))
        split = {part: Bags([m for _, m, _ in rows], np.array([label for *_, label in rows], dtype=np.int64),
                            [bag for bag, _, _ in rows]) for part, rows in grouped.items()}
        return BagSplit(split, names)


def bag_holdout(y: np.ndarray, path: str, val: float = 0.2, test: float = 0.2, stratify: bool = True, seed: int = 0,
                name: str = "bag_holdout") -> dict[str, np.ndarray]:
    """A hold-out over whole bags (stratified by bag label), returned as instance indices per part.

    Splitting instances would scatter a slide's tiles over train and test; here each bag's
    instances stay together, so ``preprocess`` fits its statistics on training bags only.
    Instances in no bag belong to no part; an instance in bags of two parts is an error.
    """
    assignment = read_assignment(Path(path))
    members = [np.asarray(m, dtype=np.int64) for m, _ in assignment.values()]
    if min(int(m.min()) for m in members) < 0 or max(int(m.max()) for m in members) >= len(y):
        raise ConfigError(path, f"names instances outside 0..{len(y) - 1}", "indices into the dataset's samples")
    bag_parts = holdout(np.array([label for _, label in assignment.values()]), val, test, stratify, seed, name)
    parts = {part: np.unique(np.concatenate([members[b] for b in bags])) if len(bags) else np.empty(0, np.int64)
             for part, bags in bag_parts.items()}
    shared = np.intersect1d(parts["train"], np.concatenate([parts["val"], parts["test"]]))
    if len(shared) or len(np.intersect1d(parts["val"], parts["test"])):
        raise ConfigError(path, "some instances belong to bags of different parts", "each instance in one bag only")
    return parts


class BagDataset(Dataset):
    def __init__(self, instances: torch.Tensor, bags: Bags):
        self.instances, self.bags = instances, bags

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.instances[torch.from_numpy(self.bags.members[i])], int(self.bags.labels[i]), i


def collate_bags(items: list[tuple[torch.Tensor, int, int]]) -> dict[str, torch.Tensor]:
    """Pads bags of different sizes to the largest: ``x`` (B, N, ...), ``mask`` (B, N) true on real instances."""
    longest = max(len(x) for x, _, _ in items)
    x = items[0][0].new_zeros(len(items), longest, *items[0][0].shape[1:])
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for row, (instances, _, _) in enumerate(items):
        x[row, :len(instances)] = instances
        mask[row, :len(instances)] = True
    return {"x": x, "mask": mask, "y": torch.tensor([y for _, y, _ in items]), "bag": torch.tensor([i for *_, i in items])}


class BagDataModule(DataModule):
    """Serves the bags of each part. ``batch_size`` counts training bags; validation and test batches
    (``eval_batch_size``) only change speed, since bags are padded and masked and eval-mode outputs
    do not depend on batch-mates. ``input_shape`` is one instance's shape (what the backbone, the
    instance encoder, is built for) and ``num_classes`` the number of bag classes."""

    def __init__(self, data: ProcessedData, bags: BagSource | None = None, batch_size: int = 1, num_workers: int = 0,
                 seed: int = 0, augment: Any = None, eval_batch_size: int = 64):
        super().__init__()
        if bags is None:
            raise ConfigError("data.bags", "task=mil needs bags of instances",
                              "data=digits_bags, or a data.bags node with _target_ labline.data.bags.TargetBags or BagFile")
        if augment is not None:
            raise ConfigError("augment", "task=mil does not augment instances", "augment=none")
        self.data, self.num_workers, self.seed = data, num_workers, seed
        self.shuffler: EpochShuffle | None = None
        self.batch_sizes = {"train": batch_size, "val": eval_batch_size, "test": eval_batch_size}
        split = bags(data, seed)
        self.parts, self.bag_classes = split.parts, split.classes
        for part in SPLIT_PARTS:
            if len(self.parts[part]) == 0:
                raise ConfigError("data.bags", f"there are no {part} bags", "bags whose instances lie in that part")
        if len(np.unique(self.parts["train"].labels)) < 2:
            raise ConfigError("data.bags", "every training bag has the same label", "more training bags, or another target")
        instances = torch.from_numpy(np.ascontiguousarray(data.x))
        self.sets = {part: BagDataset(instances, bags) for part, bags in self.parts.items()}

    @property
    def classes(self) -> list[str]:
        """The bag classes (what a MIL run predicts), not the instances'."""
        return self.bag_classes

    def part_dataset(self, part: str) -> BagDataset:
        """The bags of ``part`` (what ``labline.runs.predictions`` serves in place of the test part)."""
        return self.sets[part]

    def part_index(self, part: str) -> np.ndarray:
        """The bag ids of ``part`` in loader order: what identifies a bag across runs and ensembles."""
        return np.array(self.parts[part].ids)

    def test_signature(self) -> bytes:
        """The test bags' membership and labels, for the run's ``split_hash`` (ensembles compare it)."""
        test = self.parts["test"]
        return b"|".join(m.astype(np.int64).tobytes() for m in test.members) + test.labels.astype(np.int64).tobytes()

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        sampler = EpochShuffle(len(self.sets[part]), self.seed) if shuffle else None
        if shuffle:
            self.shuffler = sampler
        # As in ArrayDataModule: without its own generator a loader seeds its workers from the global RNG whenever
        # an iterator starts, which on resume happens at another moment.
        return DataLoader(self.sets[part], batch_size=self.batch_sizes[part], sampler=sampler, collate_fn=collate_bags,
                          generator=torch.Generator().manual_seed(self.seed),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory)

    def set_epoch(self, epoch: int) -> None:
        """Called at every training epoch start (EpochSeed): the bag order depends on (seed, epoch) only, also after
        a resume, where Lightning's own ``sampler.set_epoch`` lags by one."""
        if self.shuffler is not None:
            self.shuffler.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
