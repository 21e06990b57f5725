"""Seeds derived from the run's seed, so an epoch's randomness depends only on (seed, epoch).

Whatever draws per epoch (shuffling, augmentation, the global RNGs reseeded at every epoch start) uses
``epoch_seed``, so a run resumed at epoch k draws for epoch k+1 exactly what the uninterrupted run drew.
"""

from __future__ import annotations

SEED_STRIDE = 1_000_003


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * SEED_STRIDE + epoch) % (2**32)
