"""Focal loss (Lin et al. 2017) for softmax classifiers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labline.core.errors import ConfigError


class FocalLoss(nn.Module):
    """Cross-entropy scaled by ``(1 - p_t)^gamma``, so confidently right samples count less than hard ones.

    ``gamma = 0`` with no ``alpha`` is exactly cross-entropy. ``alpha`` weighs each
    class; the mean is over samples as in the paper, not over weights as in
    ``CrossEntropyLoss(weight=...)``. A single alpha, as in the paper's binary
    sigmoid form, would only rescale a softmax loss, so it is refused.
    """

    target = "index"

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | None = None, ignore_index: int = -100):
        super().__init__()
        if gamma < 0:
            raise ConfigError("loss.gamma", f"must be >= 0, got {gamma}", "0 (plain cross-entropy) .. 5; the paper uses 2")
        if alpha is not None and (isinstance(alpha, (int, float)) or any(a < 0 for a in alpha)):
            raise ConfigError("loss.alpha", f"must be one non-negative weight per class, got {alpha}",
                              "null or a list of num_classes weights >= 0")
        self.gamma, self.ignore_index = float(gamma), ignore_index
        self.register_buffer("alpha", None if alpha is None else torch.tensor(list(alpha), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none", ignore_index=self.ignore_index)
        keep = target != self.ignore_index
        loss = (1.0 - torch.exp(-ce)).pow(self.gamma) * ce
        if self.alpha is not None:
            if self.alpha.numel() != logits.shape[1]:
                raise ValueError(f"alpha has {self.alpha.numel()} weights for {logits.shape[1]} classes")
            loss = loss * self.alpha[torch.where(keep, target, 0)]
        return loss[keep].mean()
