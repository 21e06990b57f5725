"""A LightningDataModule over in-memory arrays and split indices.

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
from torch.utils.data import DataLoader, TensorDataset

from labline.data.samplers import EpochShuffle
from labline.data.stages import ProcessedData
from labline.errors import ConfigError

Augment = Callable[[torch.Tensor], torch.Tensor]


class ArrayDataModule(pl.LightningDataModule):
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

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.data.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        sampler = EpochShuffle(len(self.sets[part]), self.seed) if shuffle else None
        if shuffle:
            self.shuffler = sampler
        # A loader without a generator draws its workers' base seed from the global RNG each time an
        # iterator starts; on resume that happens at another moment and would shift every dropout mask.
        return DataLoader(self.sets[part], batch_size=self.batch_size, sampler=sampler,
                          generator=torch.Generator().manual_seed(self.seed),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def set_epoch(self, epoch: int) -> None:
        """Called at every training epoch start (EpochSeed) so shuffling and augmentation depend on (seed, epoch)
        only. Lightning's own ``sampler.set_epoch`` counts *processed* epochs, which lags by one after a resume
        from an end-of-epoch checkpoint; this call comes later and wins."""
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
