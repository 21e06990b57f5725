"""MLP classifier head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers


def mlp(in_features: int, hidden: Sequence[int], out_features: int, activation: str, dropout: float) -> nn.Sequential:
    """Linear -> activation -> dropout per hidden width, then a last linear layer; shared by the MLP and projection heads."""
    hidden = layers.positive_ints(hidden, "head.hidden")
    if activation not in layers.ACTIVATIONS:
        raise ConfigError("head.activation", f"unknown activation '{activation}'", sorted(layers.ACTIVATIONS))
    layers.check_dropout(dropout, "head.dropout")
    blocks: list[nn.Module] = []
    width = in_features
    for out in hidden:
        blocks += [nn.Linear(width, out), layers.activation(activation), nn.Dropout(dropout)]
        width = out
    return nn.Sequential(*blocks, nn.Linear(width, out_features))


class MLPHead(nn.Module):
    """A non-linear classifier on the features: more capacity than a linear probe on a frozen backbone."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256,), activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        self.net = mlp(in_features, hidden, num_classes, activation, dropout)
        self.out_features = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
