"""Named activations and norms, so configs can say ``activation: gelu``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
}
NORMS = ("batch", "layer", "none")


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError("backbone.activation", f"unknown activation '{name}'", sorted(ACTIVATIONS))
    return ACTIVATIONS[name]()


def check_dropout(p: float, key: str = "backbone.dropout") -> float:
    if not 0.0 <= p < 1.0:
        raise ConfigError(key, f"must be in [0, 1), got {p}")
    return p


def norm1d(kind: str, width: int) -> nn.Module:
    """Norm for feature vectors ``(N, width)``."""
    return {"batch": lambda: nn.BatchNorm1d(width), "layer": lambda: nn.LayerNorm(width),
            "none": nn.Identity}[_check_norm(kind)]()


def norm2d(kind: str, channels: int) -> nn.Module:
    """Norm for feature maps ``(N, C, H, W)``; layer norm = GroupNorm with one group (over C, H, W)."""
    return {"batch": lambda: nn.BatchNorm2d(channels), "layer": lambda: nn.GroupNorm(1, channels),
            "none": nn.Identity}[_check_norm(kind)]()


def _check_norm(kind: str) -> str:
    if kind not in NORMS:
        raise ConfigError("backbone.norm", f"unknown norm '{kind}'", NORMS)
    return kind


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of each time step of a ``(N, C, L)`` map.

    Normalising each step on its own keeps a causal network causal, which a
    norm over (C, L) or a batch norm in training mode would not.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def norm_seq(kind: str, channels: int) -> nn.Module:
    """Norm for sequence maps ``(N, C, L)``; layer norm is per time step (see ``ChannelLayerNorm``)."""
    return {"batch": lambda: nn.BatchNorm1d(channels), "layer": lambda: ChannelLayerNorm(channels),
            "none": nn.Identity}[_check_norm(kind)]()


def positive_int(value: int, key: str) -> int:
    """A positive integer (a depth, a head count), or a ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(key, f"must be a positive integer, got {value!r}")
    return value


def positive_ints(values: Sequence[int], key: str) -> list[int]:
    """A non-empty list of positive integers (widths, depths, channels), or a ConfigError naming ``key``."""
    values = list(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
        raise ConfigError(key, f"must be a non-empty list of positive integers, got {values}")
    return values
