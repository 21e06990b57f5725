"""Vision Transformer (Dosovitskiy et al. 2021): patch tokens plus a class token through a transformer encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers
from labline.models.backbones.shapes import image_shape
from labline.models.blocks import PatchEmbedding


class ViT(nn.Module):
    """Pre-norm encoder over ``[class token, patch tokens] + positional embedding``; the features are the class
    token's final state (width ``dim``). Positional embeddings are learned for one image size: the ``in_shape``."""

    def __init__(self, in_shape: Sequence[int], patch_size: int = 2, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.1, activation: str = "gelu"):
        super().__init__()
        c, h, w = image_shape(in_shape, "vit")
        if patch_size < 1 or h % patch_size or w % patch_size:
            divisors = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
            raise ConfigError("backbone.patch_size", f"{patch_size} does not divide the image size {h}x{w}", divisors)
        for key, value in (("dim", dim), ("depth", depth), ("heads", heads)):
            layers.positive_int(value, f"backbone.{key}")
        if dim % heads:
            raise ConfigError("backbone.heads", f"{heads} heads do not divide dim={dim}",
                              [n for n in range(1, dim + 1) if dim % n == 0])
        if mlp_ratio <= 0:
            raise ConfigError("backbone.mlp_ratio", f"must be positive, got {mlp_ratio}")
        layers.check_dropout(dropout)
        self.patches = PatchEmbedding(c, dim, patch_size)
        tokens = (h // patch_size) * (w // patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, tokens + 1, dim), std=0.02))
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, round(dim * mlp_ratio), dropout, activation=layers.activation(activation),
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.out_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x)
        cls = self.cls_token.expand(len(tokens), -1, -1)
        return self.encoder(self.dropout(torch.cat([cls, tokens], 1) + self.pos_embedding))[:, 0]
