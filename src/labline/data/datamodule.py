"""The datamodule contract labline relies on, and the default datamodule over in-memory arrays and split indices.

``DataModule`` declares what the rest of labline asks of any datamodule a task brings (episodes, bags,
paired views): the input shape and the classes a task is built for, which samples each row of a part is
(``part_index``, what ensembles compare), clean samples of a part to score (``part_dataset``), what identifies
the test examples beyond their indices (``test_signature``, in the run's ``split_hash``) and the per-epoch
reseeding hook (``set_epoch``). Every datamodule serves its loaders from ``sets``, so the runs layer can serve
another part in place of the test part (validation predictions).

Small research datasets fit in memory; indexing one tensor is far faster
than a per-sample Dataset, which keeps labline's overhead over a plain loop
small (see benches/overhead.py).

Augmentation runs on whole batches after they reach the device
(``on_after_batch_transfer``), and only while the trainer is training: the
validation loop, the sanity check and the test never see augmented inputs,
whatever loader serves them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler, TensorDataset

from labline.core.errors import ConfigError
from labline.data.pipeline import ProcessedData
from labline.data.samplers import EpochBatches, EpochShuffle

Augment = Callable[[torch.Tensor], torch.Tensor]


class DataModule(pl.LightningDataModule):
    """The base of every datamodule a task brings (see the module docstring). Built as
    ``DataModule(data=..., batch_size=..., num_workers=..., seed=..., augment=..., **options)``."""

    data: ProcessedData
    sets: dict[str, Dataset]
    # Page-locked batches, so the copy to a GPU can overlap compute (``data.pin_memory``; set by the run).
    pin_memory: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input the backbone is built for."""
        return tuple(self.data.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """The width the task's head predicts (one output per class unless a datamodule says otherwise)."""
        return len(self.classes)

    @property
    def classes(self) -> list[str]:
        """Names of the classes the run is scored on (the confusion matrix's rows)."""
        return self.data.classes

    def part_index(self, part: str) -> np.ndarray:
        """What identifies each example of ``part``, in loader order (dataset indices by default)."""
        return self.data.parts[part]

    def part_dataset(self, part: str) -> Dataset:
        """The clean examples of ``part``, shaped like the test part's (what is served in place of the test part)."""
        idx = self.data.parts[part]
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(self.data.x[idx])), torch.from_numpy(self.data.y[idx]))

    def test_signature(self) -> bytes:
        """What tells two runs' test examples apart beyond the dataset's test indices (bags regroup them)."""
        return b""

    def set_epoch(self, epoch: int) -> None:
        """Called at every training epoch start, so shuffling and augmentation depend on (seed, epoch) only."""


class RowBatches(Dataset):
    """A ``TensorDataset`` read a batch at a time: item ``index`` (a tensor of row indices) is each tensor's rows.
    ``index_select``, because advanced indexing (``tensor[index]``, what ``TensorDataset`` does) took ~0.5 ms a
    batch with two threads on a loaded machine, as much as the per-sample loader it replaces."""

    def __init__(self, dataset: TensorDataset):
        self.tensors = dataset.tensors

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.index_select(0, index) for t in self.tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])


class ArrayDataModule(DataModule):
    """Serves the train / val / test parts of a ``ProcessedData``."""

    def __init__(self, data: ProcessedData, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 augment: Augment | None = None):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.sets = {
            part: TensorDataset(torch.from_numpy(np.ascontiguousarray(data.x[idx])), torch.from_numpy(data.y[idx]))
            for part, idx in data.parts.items()
        }
        self.augment = augment
        self.shuffler: EpochShuffle | None = None
        if augment is not None:
            self._check_augment(augment)

    def _check_augment(self, augment: Augment) -> None:
        """Run a copy of the augmentation on two training samples, so a misfit (wrong input rank, a changed
        shape the model was not built for) fails before training. The copy leaves the real generator's
        stream untouched: runs with and without this check draw the same augmentations."""
        sample = self.sets["train"].tensors[0][:2]
        try:
            out = copy.deepcopy(augment)(sample.clone())
        except ConfigError:
            raise
        except Exception as exc:
            problem = " ".join(str(exc).split())
            raise ConfigError("augment", f"fails on a batch of shape {tuple(sample.shape)}: {problem}") from None
        if not isinstance(out, torch.Tensor) or out.shape != sample.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError("augment", f"turns a batch of shape {tuple(sample.shape)} into {got}",
                              "augmentations that keep the input shape (e.g. size: null for crops)")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.augment is None or self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        return self.augment(x), y

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        """In one process, a part held as tensors is served in whole batches (``EpochBatches``: each tensor indexed
        with a batch's indices), the same batches in the same order as a per-sample loader over the same sampler,
        for a fifth of its cost (benches/epoch_parts.py). Over several ranks the per-sample loader stays, so that
        Lightning's distributed sampler shards samples, not batches."""
        dataset = self.sets[part]
        sampler = EpochShuffle(len(dataset), self.seed) if shuffle else None
        if shuffle:
            self.shuffler = sampler
        # A loader without a generator draws its workers' base seed from the global RNG each time an
        # iterator starts; on resume that happens at another moment and would shift every dropout mask.
        common = {"generator": torch.Generator().manual_seed(self.seed), "num_workers": self.num_workers,
                  "persistent_workers": self.num_workers > 0, "pin_memory": self.pin_memory}
        if isinstance(dataset, TensorDataset) and getattr(self.trainer, "world_size", 1) == 1:
            batches = EpochBatches(sampler or SequentialSampler(dataset), self.batch_size, drop_last=False)
            return DataLoader(RowBatches(dataset), batch_size=None, sampler=batches, **common)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, **common)

    def set_epoch(self, epoch: int) -> None:
        """Lightning's own ``sampler.set_epoch`` counts *processed* epochs, which lags by one after a resume from an
        end-of-epoch checkpoint; this call (EpochSeed's, at every epoch start) comes later and wins."""
        if self.shuffler is not None:
            self.shuffler.set_epoch(epoch)
        if self.augment is not None and hasattr(self.augment, "set_epoch"):
            self.augment.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
