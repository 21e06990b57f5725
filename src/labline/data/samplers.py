"""Shuffling that depends only on (seed, epoch).

A DataLoader's own generator advances epoch by epoch, so a run resumed at
epoch k would replay epoch 0's order. Lightning calls ``set_epoch`` on the
sampler before every epoch; deriving the permutation from it makes a resumed
run see exactly the batches the uninterrupted one saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

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
