"""Named activations and norms, so configs can say ``activation: gelu``."""

from __future__ import annotations

from torch import nn

from labline.errors import ConfigError

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
