"""Plain CNN: stages of conv3x3 -> norm -> activation, max-pooled between stages."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.errors import ConfigError
from labline.models import layers


class CNN(nn.Module):
    """One conv block per entry of ``channels``; halves the resolution between blocks while it can."""

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128), dropout: float = 0.1,
                 activation: str = "relu", norm: str = "batch"):
        super().__init__()
        if len(in_shape) != 3:
            raise ConfigError("backbone", f"cnn needs image input (C, H, W), got shape {tuple(in_shape)}", "mlp, conv1d")
        if not channels or any(c <= 0 for c in channels):
            raise ConfigError("backbone.channels", f"must be positive, got {list(channels)}")
        layers.check_dropout(dropout)
        blocks: list[nn.Module] = []
        c_in, size = in_shape[0], min(in_shape[1:])
        for i, c_out in enumerate(channels):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"), layers.norm2d(norm, c_out),
                       layers.activation(activation)]
            if i < len(channels) - 1 and size >= 2:
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*blocks)
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

