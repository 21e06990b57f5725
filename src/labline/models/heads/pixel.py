"""Per-pixel classifier on a dense feature map: what a linear head is to a pooled feature vector."""

from __future__ import annotations

import torch
from torch import nn

from labline.models.layers import check_dropout


class PixelHead(nn.Module):
    """Channel dropout then a 1x1 conv: ``(N, C, H, W)`` features -> ``(N, K, H, W)`` class scores."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout2d(check_dropout(dropout, "head.dropout"))
        self.conv = nn.Conv2d(in_features, num_classes, 1)
        self.out_features = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.drop(x))
