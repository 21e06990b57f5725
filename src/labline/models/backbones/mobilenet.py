"""MobileNet-style backbone (Howard et al. 2017): a conv stem, then stages of depthwise-separable convs.

``width_mult`` (MobileNet's alpha) scales every width, trading accuracy for
parameters and FLOPs roughly quadratically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers
from labline.models.backbones.shapes import image_shape
from labline.models.blocks import LARGE_IMAGE, ConvNormAct, DepthwiseSeparableConv, GlobalAvgPool, downsample, stage_plan


class MobileNet(nn.Module):
    """Stem conv3x3 (stride 2 on images of 64 pixels or more), then ``depths[i]`` separable blocks of ``widths[i]``;
    each stage after the first starts with stride 2 while the map is at least 2 wide."""

    def __init__(self, in_shape: Sequence[int], widths: Sequence[int] = (64, 128, 256), depths: Sequence[int] = (1, 2, 2),
                 stem_channels: int = 32, width_mult: float = 1.0, kernel_size: int = 3, dropout: float = 0.1,
                 activation: str = "relu", norm: str = "batch", se: bool = False):
        super().__init__()
        c, h, w = image_shape(in_shape, "mobilenet")
        if width_mult <= 0:
            raise ConfigError("backbone.width_mult", f"must be positive, got {width_mult}", "e.g. 0.25, 0.5, 0.75, 1.0")
        layers.positive_int(stem_channels, "backbone.stem_channels")
        layers.check_dropout(dropout)

        def scaled(width: int) -> int:
            return max(1, round(width * width_mult))

        stem_stride, size = downsample(min(h, w)) if min(h, w) >= LARGE_IMAGE else (1, min(h, w))
        c_in = scaled(stem_channels)
        blocks: list[nn.Module] = [ConvNormAct(c, c_in, 3, stem_stride, norm=norm, activation=activation)]
        for width, stride in stage_plan(depths, widths, size):
            blocks.append(DepthwiseSeparableConv(c_in, scaled(width), kernel_size, stride, norm=norm, activation=activation,
                                                 se=se))
            c_in = scaled(width)
        self.net = nn.Sequential(*blocks, GlobalAvgPool(), nn.Dropout(dropout))
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
