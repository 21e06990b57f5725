"""Multi-crop views for self-distillation (DINO): ``global_crops`` large crops and ``local_crops`` small ones.

Training batches become ``([global_1, ..., global_G], [local_1, ..., local_L], y)``: each crop is a fresh draw
of ``global_crop`` (or ``local_crop``, whose ``size`` may be smaller than the image: the backbones pool
globally, so they take any size), followed by the run's ``augment`` (the photometric part of the views). The
network trains on every training input without its label: the labeled training part and, when the run has
one, the ``unlabeled`` part (``data.labels_per_class`` and friends). Validation and test serve clean images
twice over, like the contrastive task's: first the labeled training part, which fits the k-NN index and the
linear probe, then the part scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from labline.core.errors import ConfigError
from labline.data.datamodule import ArrayDataModule, Augment
from labline.data.pipeline import ProcessedData
from labline.data.semi import PART, check_views
from labline.data.views import PROBE_EVAL, PROBE_FIT

__all__ = ["PROBE_EVAL", "PROBE_FIT", "MultiCropDataModule"]


class MultiCropDataModule(ArrayDataModule):
    def __init__(self, data: ProcessedData, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 augment: Augment | None = None, global_crop: Augment | None = None, local_crop: Augment | None = None,
                 global_crops: int = 2, local_crops: int = 6):
        super().__init__(data, batch_size, num_workers, seed, augment)
        for key, value, least in (("task.datamodule.global_crops", global_crops, 2),
                                  ("task.datamodule.local_crops", local_crops, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(key, f"must be an integer >= {least}, got {value!r}",
                                  "2 global crops (each is the other's target), 0 or more local crops")
        if global_crop is None:
            raise ConfigError("task.datamodule.global_crop", "DINO compares different crops of a sample, but none is "
                              "configured", "an augmentation node, e.g. conf/augment/global_crop.yaml")
        if local_crops and local_crop is None:
            raise ConfigError("task.datamodule.local_crop", f"{local_crops} local crops asked for, but no local_crop",
                              "an augmentation node, or task.datamodule.local_crops=0")
        sample = self.sets["train"].tensors[0][:2]
        check_views(global_crop, sample, "task.datamodule.global_crop")
        check_views(local_crop if local_crops else None, sample, "task.datamodule.local_crop")
        self.global_crop, self.local_crop = global_crop, local_crop
        self.global_crops, self.local_crops = global_crops, local_crops
        self.probe_set = self.sets["train"]
        pretrain = np.concatenate([data.parts["train"], data.parts.get(PART, data.parts["train"][:0])])
        self.sets["train"] = TensorDataset(torch.from_numpy(np.ascontiguousarray(data.x[pretrain])),
                                           torch.from_numpy(data.y[pretrain]))

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for crop in (self.global_crop, self.local_crop):
            if crop is not None and hasattr(crop, "set_epoch"):
                crop.set_epoch(epoch)

    def crops(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(global crops, local crops)`` of a batch, the run's augment applied after each crop."""
        extra = self.augment or (lambda v: v)
        return ([extra(self.global_crop(x)) for _ in range(self.global_crops)],
                [extra(self.local_crop(x)) for _ in range(self.local_crops)])

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        return (*self.crops(x), y)

    def _probe_loader(self) -> DataLoader:
        return DataLoader(self.probe_set, batch_size=self.batch_size, num_workers=self.num_workers,
                          pin_memory=self.pin_memory)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._probe_loader(), self._loader("val", shuffle=False)]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._probe_loader(), self._loader("test", shuffle=False)]
