"""Fully connected backbone on the flattened input."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers


class MLP(nn.Module):
    """Linear -> norm -> activation -> dropout, once per hidden width."""

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int] = (256, 128), dropout: float = 0.1,
                 activation: str = "relu", norm: str = "batch"):
        super().__init__()
        if not hidden or any(w <= 0 for w in hidden):
            raise ConfigError("backbone.hidden", f"widths must be positive, got {list(hidden)}")
        layers.check_dropout(dropout)
        blocks: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for out in hidden:
            blocks += [nn.Linear(width, out), layers.norm1d(norm, out), layers.activation(activation), nn.Dropout(dropout)]
            width = out
        self.net = nn.Sequential(*blocks)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

