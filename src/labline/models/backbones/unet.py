"""U-Net (Ronneberger et al. 2015): a conv encoder, a decoder that upsamples back, skip connections between them.

A segmentation backbone returns a dense feature map ``(N, C, H, W)`` at the input's resolution, not a
pooled vector; a per-pixel head (``head=pixel``) turns it into class scores. The skips hand the decoder the
encoder's full-resolution features, which is what recovers object boundaries that the downsampled path
blurs (compare ``backbone=fcn``, which has none).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labline.models import layers
from labline.models.backbones.shapes import image_shape
from labline.models.blocks import ConvNormAct


def double_conv(c_in: int, c_out: int, norm: str, activation: str) -> nn.Sequential:
    return nn.Sequential(ConvNormAct(c_in, c_out, norm=norm, activation=activation),
                         ConvNormAct(c_out, c_out, norm=norm, activation=activation))


class UNet(nn.Module):
    """One encoder level per entry of ``channels`` (two 3x3 convs, max-pooled by 2 before every level after the
    first), a mirrored decoder (2x2 transposed conv up, concatenate the level's skip, two 3x3 convs).
    Output: ``channels[0]`` maps at the input's size (odd sizes are cropped back after each upsampling)."""

    family = "unet"

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int] = (16, 32, 64), dropout: float = 0.0,
                 activation: str = "relu", norm: str = "batch"):
        super().__init__()
        c, _, _ = image_shape(in_shape, self.family)
        channels = layers.positive_ints(channels, "backbone.channels")
        self.down = nn.ModuleList()
        for c_out in channels:
            self.down.append(double_conv(c, c_out, norm, activation))
            c = c_out
        deeper, shallower = channels[:0:-1], channels[-2::-1]  # decoder levels, deepest first
        self.up = nn.ModuleList(nn.ConvTranspose2d(hi, lo, 2, stride=2) for hi, lo in zip(deeper, shallower, strict=True))
        self.merge = nn.ModuleList(double_conv(2 * lo, lo, norm, activation) for lo in shallower)
        self.drop = nn.Dropout2d(layers.check_dropout(dropout))
        self.out_features = channels[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, level in enumerate(self.down):
            x = level(x if i == 0 else F.max_pool2d(x, 2, ceil_mode=True))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, skips[-2::-1], strict=True):
            x = up(x)[..., :skip.shape[-2], :skip.shape[-1]]
            x = merge(torch.cat([skip, x], 1))
        return self.drop(x)
