"""Dice loss for binary and multi-class outputs (segmentation maps or class scores)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labline.core.errors import ConfigError
from labline.metrics.masks import dice


class DiceLoss(nn.Module):
    """``1 - mean over classes of the soft Dice`` between predicted probabilities and the targets.

    Outputs are ``(N, C, ...)``: one channel means binary (sigmoid, targets 0/1 of
    the same spatial shape), more channels multi-class (softmax, targets class
    indices ``(N, ...)`` or one-hot/soft ``(N, C, ...)``). Overlaps are summed over the
    batch and spatial positions per class, so rare classes weigh as much as
    common ones: the reason to pick Dice over cross-entropy for imbalanced masks.
    """

    target = "index"

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        if smooth < 0:
            raise ConfigError("loss.smooth", f"must be >= 0, got {smooth}", "0 .. 1; 1 is usual")
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            probs, truth = logits.sigmoid(), target.float().reshape(logits.shape)
        else:
            probs = logits.softmax(1)
            is_index = not target.is_floating_point() and target.ndim == logits.ndim - 1
            truth = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).float() if is_index else target.float()
        dims = [0, *range(2, logits.ndim)]
        return 1.0 - dice(probs, truth, dims, self.smooth).mean()
