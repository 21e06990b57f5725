"""FCN (Long et al. 2015): an existing classification backbone's last feature map, upsampled to the input.

The encoder is any labline conv backbone whose ``net`` ends in a global average pool (cnn, vgg, resnet):
the modules before the pool give a coarse map (8x8 from a 32x32 input with the default cnn), a 3x3 conv
mixes it, and bilinear upsampling brings it back to the input's resolution (FCN-32s: no skips, so
boundaries are only as sharp as the coarse map; compare ``backbone=unet``).

``backbone.weights`` takes an FCN checkpoint (every key) or a classifier's: the encoder class's own keys
``net.*`` fill the encoder (the same module indices, the pool and dropout after them hold no weights) and
the mixing conv starts fresh, so a segmentation run can start from a trained classification backbone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers
from labline.models.backbones.shapes import image_shape
from labline.models.blocks import ConvNormAct, GlobalAvgPool

ENCODERS = "labline.models.backbones.cnn.CNN, .vgg.VGG, .resnet.ResNet"
# an encoder class's checkpoint keys: its ``net``, which ``feature_map`` keeps the head of
ENCODER_KEYS = "net."


def feature_map(encoder: nn.Module) -> nn.Sequential:
    """The part of ``encoder.net`` before its global average pool: a map ``(N, C, h, w)``, not a vector."""
    net = getattr(encoder, "net", None)
    modules = list(net) if isinstance(net, nn.Sequential) else []
    pools = [i for i, m in enumerate(modules) if isinstance(m, GlobalAvgPool)]
    if not pools:
        raise ConfigError("backbone.encoder", f"{type(encoder).__name__} has no net ending in a global average pool",
                          ENCODERS)
    return nn.Sequential(*modules[:pools[0]])


class FCN(nn.Module):
    """``encoder`` (a partial backbone, built here for ``in_shape``) -> its feature map -> 3x3 conv to
    ``width`` channels -> bilinear upsampling to the input's size."""

    family = "fcn"

    def __init__(self, in_shape: Sequence[int], encoder: Callable[..., nn.Module], width: int = 64, dropout: float = 0.0,
                 activation: str = "relu", norm: str = "batch"):
        super().__init__()
        image_shape(in_shape, self.family)
        if not callable(encoder):
            raise ConfigError("backbone.encoder", "must be a backbone node with _partial_: true", ENCODERS)
        self.encoder = feature_map(encoder(in_shape=list(in_shape)))
        with torch.no_grad():
            channels = self.encoder(torch.zeros(1, *in_shape)).shape[1]
        self.mix = ConvNormAct(channels, layers.positive_int(width, "backbone.width"), norm=norm, activation=activation)
        self.drop = nn.Dropout2d(layers.check_dropout(dropout))
        self.out_features = width

    def pretrained_part(self, state: dict[str, torch.Tensor]) -> tuple[nn.Module, str, dict[str, torch.Tensor]] | None:
        """``(module, its key prefix here, state)`` when ``state`` is the encoder class's (a classifier's backbone,
        keys ``net.*``) rather than an FCN's: the encoder is loaded from it; None loads the whole FCN."""
        if not any(k.startswith(ENCODER_KEYS) for k in state):
            return None
        return self.encoder, "encoder.", {k.removeprefix(ENCODER_KEYS): v for k, v in state.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = self.mix(self.encoder(x))
        return self.drop(F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False))
