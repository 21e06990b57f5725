"""Linear classifier on backbone features."""

from __future__ import annotations

import torch
from torch import nn

from labline.models.layers import check_dropout


class LinearHead(nn.Module):
    """Dropout then one linear layer: the "downstream" part a linear probe trains."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(check_dropout(dropout, "head.dropout"))
        self.fc = nn.Linear(in_features, num_classes)
        self.out_features = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))
