"""1-D CNN over sequences: the plain-CNN layout with 1-D convs along time.

On an image the rows are the time steps (see ``shapes``): digits become 8
steps of 8 features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.models import layers
from labline.models.backbones.shapes import as_channels_first, sequence_shape
from labline.models.blocks import GlobalAvgPool, conv_stages


class Conv1D(nn.Module):
    """One conv -> norm -> activation block per entry of ``channels``, max-pooled by 2 between blocks while the
    sequence is at least 2 long, then averaged over time."""

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128), kernel_size: int = 3,
                 dropout: float = 0.1, activation: str = "relu", norm: str = "batch"):
        super().__init__()
        steps, features = sequence_shape(in_shape, "conv1d")
        channels = layers.positive_ints(channels, "backbone.channels")
        layers.check_dropout(dropout)
        convs, width = conv_stages(features, steps, [[c] for c in channels], dims=1, kernel_size=kernel_size, norm=norm,
                                   activation=activation)
        self.net = nn.Sequential(convs, GlobalAvgPool(), nn.Dropout(dropout))
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(as_channels_first(x))
