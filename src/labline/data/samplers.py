"""Shuffling that depends only on (seed, epoch).

A DataLoader's own generator advances epoch by epoch, so a run resumed at
epoch k would replay epoch 0's order. Lightning calls ``set_epoch`` on the
sampler before every epoch; deriving the permutation from it makes a resumed
run see exactly the batches the uninterrupted one saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, Sampler

from labline.core.seeding import epoch_seed


class EpochShuffle(Sampler[int]):
    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class EpochBatches(BatchSampler):
    """A sampler's indices in batches, each a tensor of indices, for a dataset that reads a whole batch at once
    (``datamodule.RowBatches``): the same batches, in the same order, as a per-sample loader over the same sampler,
    without a ``__getitem__`` per sample and a collate per batch. Forwards ``set_epoch`` (Lightning calls it on a
    loader's sampler) to the sampler it batches."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator, like BatchSampler's: the order is drawn at the first batch, so a ``set_epoch`` made after the
        # loader's iterator was created still decides it (after a resume, EpochSeed's call comes that late).
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        batches = order.split(self.batch_size)
        yield from batches[:-1] if self.drop_last and len(order) % self.batch_size else batches

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
