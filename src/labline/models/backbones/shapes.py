"""Which inputs a backbone family accepts, and how images become sequences.

Sequence backbones read an image ``(C, H, W)`` row by row: H time steps, each
the C*W values of one row. That lets every sequence backbone train on the
bundled digits images as well as on true 1-D sequences ``(C, L)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from labline.core.errors import ConfigError

IMAGE_BACKBONES = "mlp, cnn, vgg, resnet, mobilenet, vit"
SEQUENCE_BACKBONES = "mlp, conv1d, tcn, gru, lstm"


def image_shape(in_shape: Sequence[int], name: str) -> tuple[int, int, int]:
    """``(C, H, W)`` or a ConfigError that points a sequence user at the sequence backbones."""
    if len(in_shape) != 3:
        raise ConfigError("backbone", f"{name} needs image input (C, H, W), got shape {tuple(in_shape)}", SEQUENCE_BACKBONES)
    c, h, w = (int(v) for v in in_shape)
    return c, h, w


def sequence_shape(in_shape: Sequence[int], name: str) -> tuple[int, int]:
    """``(steps, features per step)`` of a ``(C, L)`` sequence or a ``(C, H, W)`` image read by rows."""
    if len(in_shape) == 2:
        return int(in_shape[1]), int(in_shape[0])
    if len(in_shape) == 3:
        return int(in_shape[1]), int(in_shape[0] * in_shape[2])
    raise ConfigError("backbone", f"{name} needs a sequence (C, L) or an image (C, H, W), got shape {tuple(in_shape)}",
                      IMAGE_BACKBONES)


def as_sequence(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, L)`` or ``(N, C, H, W)`` -> ``(N, steps, features)``, time-major per sample."""
    if x.ndim == 4:
        n, c, h, w = x.shape
        return x.permute(0, 2, 1, 3).reshape(n, h, c * w)
    return x.transpose(1, 2)


def as_channels_first(x: torch.Tensor) -> torch.Tensor:
    """``as_sequence`` laid out ``(N, features, steps)``, as 1-D convolutions want it."""
    return x if x.ndim == 3 else as_sequence(x).transpose(1, 2)
