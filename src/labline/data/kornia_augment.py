"""kornia's batched augmentations (elastic warps, erasing / cutout, perspective, shear, colour jitter) as labline
augmentations: seeded, train-only, resumable like every other one (``labline.data.augment``).

kornia (torch only, no torchvision) already implements and tests these transforms on whole batches on any
device; what it does not do is draw from a generator of its own: it samples its parameters from torch's
global RNG. ``Kornia`` therefore draws one seed per call from the augmentation's own generator (reset to
(seed, epoch) by ``set_epoch``) and runs the kornia module under ``torch.random.fork_rng`` seeded with it, so

- the same seed gives the same views, and a run resumed at epoch k draws what the uninterrupted one drew;
- the global RNG that drives shuffling and dropout is left exactly as it was.

Any kornia augmentation is one YAML node: ``transform: {_target_: kornia.augmentation.RandomErasing, ...}``.
kornia's intensity transforms (``ColorJitter``, ``RandomSolarize``, ...) assume images in [0, 1] and clamp to
it: use them with ``preprocess=minmax``; geometric ones (affine, elastic, perspective, erasing) work on the
normalised data labline trains on.
"""

from __future__ import annotations

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.data.augment import Augmentation

SEED_RANGE = 2**31 - 1


class Kornia(Augmentation):
    """One kornia augmentation module, seeded from this augmentation's generator."""

    def __init__(self, transform: nn.Module, p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        if not isinstance(transform, nn.Module):
            raise ConfigError("augment.transform", f"built a {type(transform).__name__}, not a kornia augmentation",
                              "a node whose _target_ is a class of kornia.augmentation")
        self.module = transform

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, SEED_RANGE, (1,), generator=generator))
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.module(x)
        return out.to(x.dtype)
