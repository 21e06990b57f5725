"""ResNet (He et al. 2016) with configurable stages and basic or bottleneck blocks.

``depths=[2,2,2,2], widths=[64,128,256,512]`` is ResNet-18 (``block=basic``)
and, with ``depths=[3,4,6,3]`` and ``block=bottleneck``, ResNet-50. Images
narrower than 64 pixels (digits, CIFAR) get a 3x3 stride-1 stem; larger ones
the ImageNet stem (7x7 stride 2 + max pool).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers
from labline.models.backbones.shapes import image_shape
from labline.models.blocks import LARGE_IMAGE, BasicBlock, Bottleneck, ConvNormAct, GlobalAvgPool, stage_plan

BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """Stem, then ``depths[i]`` residual blocks of ``widths[i]``; each stage after the first halves the resolution
    (while it is at least 2). Features: ``widths[-1] * expansion`` (4 for bottleneck)."""

    def __init__(self, in_shape: Sequence[int], block: str = "basic", depths: Sequence[int] = (2, 2, 2),
                 widths: Sequence[int] = (32, 64, 128), dropout: float = 0.1, activation: str = "relu", norm: str = "batch",
                 se: bool = False):
        super().__init__()
        c, h, w = image_shape(in_shape, "resnet")
        if block not in BLOCKS:
            raise ConfigError("backbone.block", f"unknown block '{block}'", BLOCKS)
        layers.check_dropout(dropout)
        large = min(h, w) >= LARGE_IMAGE
        plan = stage_plan(depths, widths, (min(h, w) + 3) // 4 if large else min(h, w))
        c_in = plan[0][0]
        if large:
            stem = [ConvNormAct(c, c_in, 7, 2, norm=norm, activation=activation), nn.MaxPool2d(3, 2, padding=1)]
        else:
            stem = [ConvNormAct(c, c_in, 3, norm=norm, activation=activation)]
        blocks: list[nn.Module] = []
        for width, stride in plan:
            blocks.append(BLOCKS[block](c_in, width, stride, norm=norm, activation=activation, se=se))
            c_in = blocks[-1].out_channels
        self.net = nn.Sequential(*stem, *blocks, GlobalAvgPool(), nn.Dropout(dropout))
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
