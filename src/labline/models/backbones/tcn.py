"""Temporal convolutional network (Bai et al. 2018): residual blocks of causal dilated convs.

Block i dilates by 2**i, so the receptive field grows exponentially with
depth: ``1 + 2 (k-1) (2**levels - 1)`` steps. The features are the last
step's output, which has seen the whole sequence when the receptive field
covers it. Bai et al. choose the depth so that it does; ``grow: true`` (the
default) does that for the data at hand, adding blocks of the last width
until the field covers the sequence (digits read by rows, 8 steps: the three
given blocks; digits_seq, 64 steps: five, field 125). With ``grow: false`` a
field shorter than the sequence is averaged over every step (``pool:
auto``), so no part of a longer sequence is left unseen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError, warn_once
from labline.models import layers
from labline.models.backbones.shapes import as_channels_first, sequence_shape
from labline.models.blocks import TemporalBlock

POOLS = ("auto", "last", "mean")


def receptive_field(kernel_size: int, levels: int) -> int:
    """Steps the last output sees: two causal convs per block, block i dilated by 2**i."""
    return 1 + 2 * (kernel_size - 1) * (2**levels - 1)


class TCN(nn.Module):
    """One ``TemporalBlock`` per entry of ``channels``. Causal for ``norm`` layer/none at all times and for batch
    norm in eval mode (in training, batch statistics mix time steps)."""

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int] = (32, 32, 32), kernel_size: int = 3,
                 dropout: float = 0.1, activation: str = "relu", norm: str = "layer", pool: str = "auto",
                 grow: bool = True):
        super().__init__()
        steps, features = sequence_shape(in_shape, "tcn")
        channels = list(layers.positive_ints(channels, "backbone.channels"))
        if layers.positive_int(kernel_size, "backbone.kernel_size") < 2:
            raise ConfigError("backbone.kernel_size", "must be at least 2 for the dilations to matter", "2, 3, 5")
        layers.check_dropout(dropout)
        while grow and receptive_field(kernel_size, len(channels)) < steps:
            channels.append(channels[-1])
        widths = [features, *channels]
        self.net = nn.Sequential(*(TemporalBlock(widths[i], widths[i + 1], kernel_size, 2**i, dropout, norm, activation)
                                   for i in range(len(channels))))
        self.receptive_field = receptive_field(kernel_size, len(channels))
        if pool not in POOLS:
            raise ConfigError("backbone.pool", f"unknown pooling '{pool}'", POOLS)
        if pool == "last" and self.receptive_field < steps:
            warn_once("backbone.pool", f"the last step sees {self.receptive_field} of the {steps} steps (receptive "
                      "field)", "grow=true, pool=auto or mean, more channels entries, or a larger kernel_size")
        self.pool = "mean" if pool == "mean" or (pool == "auto" and self.receptive_field < steps) else "last"
        self.out_features = channels[-1]

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step features ``(N, C, steps)``: step t depends on inputs up to t only."""
        return self.net(as_channels_first(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.sequence(x)
        return steps.mean(dim=2) if self.pool == "mean" else steps[:, :, -1]
