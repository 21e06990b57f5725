"""VGG-style backbone: stages of 3x3 convs, max-pooled between stages, globally average-pooled at the end.

The global pool replaces VGG's fully connected classifier, so the features
work on any image size and the task head stays the downstream part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers
from labline.models.backbones.shapes import image_shape
from labline.models.blocks import GlobalAvgPool, conv_stages


class VGG(nn.Module):
    """One stage per entry of ``stages``, one conv3x3 -> norm -> activation per width in it."""

    family = "vgg"

    def __init__(self, in_shape: Sequence[int], stages: Sequence[Sequence[int]] = ((32, 32), (64, 64), (128, 128)),
                 dropout: float = 0.1, activation: str = "relu", norm: str = "batch", se: bool = False):
        super().__init__()
        c, h, w = image_shape(in_shape, self.family)
        stages = [layers.positive_ints(stage, "backbone.stages") for stage in stages]
        if not stages:
            raise ConfigError("backbone.stages", "must list at least one stage", "e.g. [[32, 32], [64, 64]]")
        layers.check_dropout(dropout)
        features, width = conv_stages(c, min(h, w), stages, norm=norm, activation=activation, se=se)
        self.net = nn.Sequential(features, GlobalAvgPool(), nn.Dropout(dropout))
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
