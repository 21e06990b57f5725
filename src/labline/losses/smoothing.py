"""Cross-entropy against label-smoothed targets, in CONCEPTS.md's convention."""

from __future__ import annotations

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.losses import labels


class LabelSmoothingLoss(nn.Module):
    """Cross-entropy with the target ``1-eps`` on the true class and ``eps/(K-1)`` on each other class.

    torch's ``CrossEntropyLoss(label_smoothing=eps)`` puts ``eps/K`` on every class
    (the true one gets ``1-eps+eps/K``); labline's option follows the convention
    researchers' notes use ([1,0,0] -> [0.9,0.05,0.05]) so ``smoothing`` means the
    probability mass taken off the true class.
    """

    target = "index"

    def __init__(self, smoothing: float = 0.1, ignore_index: int = -100):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError("loss.smoothing", f"must be in [0, 1), got {smoothing}", "0 (plain cross-entropy) .. 0.2 typically")
        self.smoothing, self.ignore_index = float(smoothing), ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = target != self.ignore_index
        soft = labels.smooth(target[keep], logits.shape[1], self.smoothing)
        return -(soft * logits[keep].log_softmax(1)).sum(1).mean()
