"""Plain CNN: the VGG layout with a single conv3x3 -> norm -> activation per stage."""

from __future__ import annotations

from collections.abc import Sequence

from labline.models import layers
from labline.models.backbones.vgg import VGG


class CNN(VGG):
    """One conv block per entry of ``channels``; halves the resolution between blocks while it can."""

    family = "cnn"

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128), dropout: float = 0.1,
                 activation: str = "relu", norm: str = "batch", se: bool = False):
        channels = layers.positive_ints(channels, "backbone.channels")
        super().__init__(in_shape, [[c] for c in channels], dropout=dropout, activation=activation, norm=norm, se=se)
