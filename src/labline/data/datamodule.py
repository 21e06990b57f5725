"""A LightningDataModule over in-memory arrays and split indices.

Small research datasets fit in memory; indexing one tensor is far faster
than a per-sample Dataset, which keeps labline's overhead over a plain loop
small (see benches/overhead.py).
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from labline.data.stages import ProcessedData


class ArrayDataModule(pl.LightningDataModule):
    """Serves the train / val / test parts of a ``ProcessedData``."""

    def __init__(self, data: ProcessedData, batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.sets = {
            part: TensorDataset(torch.from_numpy(np.ascontiguousarray(data.x[idx])), torch.from_numpy(data.y[idx]))
            for part, idx in data.parts.items()
        }

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.data.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.sets[part], batch_size=self.batch_size, shuffle=shuffle, generator=gen,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
