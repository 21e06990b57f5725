"""Two augmented views per sample, for contrastive learning.

Training batches become ``(view1, view2, y)``: the run's augmentation applied
twice, independently, on the device. Validation needs views too (its loss is the
contrastive loss), but they must be the same every epoch for ``val/loss`` to be
a curve rather than noise, so they are drawn once, from a copy of the
augmentation in its initial state. The test serves clean images twice over:
first the train part (to fit the linear probe and the k-NN index on frozen
features), then the test part.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from labline.core.errors import ConfigError
from labline.data.datamodule import ArrayDataModule, Augment
from labline.data.pipeline import ProcessedData

# Test dataloader order: features of the first fit the probes, the second is evaluated.
PROBE_FIT, PROBE_EVAL = 0, 1


class TwoViewDataModule(ArrayDataModule):
    def __init__(self, data: ProcessedData, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 augment: Augment | None = None):
        if augment is None:
            raise ConfigError("augment", "contrastive learning compares two different views of each sample, "
                              "but augment=none makes them identical", "augment=standard, global_crop, noise, ...")
        super().__init__(data, batch_size, num_workers, seed, augment)
        x, y = self.sets["val"].tensors
        fixed = copy.deepcopy(augment)
        views = [torch.cat([fixed(chunk) for chunk in x.split(batch_size)]) if len(x) else x for _ in range(2)]
        self.sets["val"] = TensorDataset(*views, y)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        return self.augment(x), self.augment(x), y

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader("train", shuffle=False), self._loader("test", shuffle=False)]
