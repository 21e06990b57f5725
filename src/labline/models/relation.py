"""Relation modules for the few-shot relation network (Sung et al. 2018): a learned score in [0, 1] per (class, query) pair.

The paper compares feature MAPS: a class's support maps and a query's map are
concatenated along the channels and a small conv net (two conv -> batch norm ->
ReLU blocks with max-pooling, then two fully connected layers) says how related
they are. Comparing position by position is what makes it learn quickly: on
glyphs (16 x 16, 3-block CNN, 500 training episodes) the conv module reached 97%
validation accuracy where an MLP on the concatenated pooled vectors reached 62%
(78% with cross-entropy instead of MSE), still rising slowly.

labline backbones end in a global average pool; for those that pool maps made by
convolutions (cnn, vgg, resnet, mobilenet: 2-D maps; conv1d: 1-D) the maps are
read at the pool's input, so the backbone needs no change. Backbones that give
only flat vectors (mlp, vit, gru, lstm, tcn, or any module without a
``GlobalAvgPool``) fall back to ``MLPRelation`` on concatenated vectors, which
learns much slower and needs far more episodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labline.models.blocks import ConvNormAct, GlobalAvgPool

_MAX_POOLS = {1: F.max_pool1d, 2: F.max_pool2d}


def global_pool(backbone: nn.Module) -> GlobalAvgPool | None:
    """The backbone's last global average pool (whose input is its feature maps), or None."""
    pools = [m for m in backbone.modules() if isinstance(m, GlobalAvgPool)]
    return pools[-1] if pools else None


def map_layout(backbone: nn.Module) -> tuple[int, int] | None:
    """``(channels, spatial rank)`` of the maps entering the backbone's global pool, read from its last convolution;
    None when the backbone does not pool conv maps (its output is all there is to compare)."""
    convs = [m for m in backbone.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    if global_pool(backbone) is None or not convs:
        return None
    return convs[-1].out_channels, 1 if isinstance(convs[-1], nn.Conv1d) else 2


def feature_maps(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, C, *spatial)``: what the backbone's global pool receives when it embeds ``x`` (read by a forward hook
    for this call only, so the backbone's own ``forward``, with its input reshaping, runs unchanged)."""
    pool = global_pool(backbone)
    if pool is None:
        raise ValueError(f"{type(backbone).__name__} has no GlobalAvgPool to read feature maps from")
    captured: list[torch.Tensor] = []
    handle = pool.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0]))
    try:
        backbone(x)
    finally:
        handle.remove()
    return captured[-1]


class ConvRelation(nn.Module):
    """Sung et al.'s relation module on ``(C, *spatial)`` maps of rank ``dims``: two conv3x3 -> batch norm -> ReLU
    blocks on the ``2C`` concatenated channels (max-pooled by 2 while the map is at least 2 wide), a global average
    pool (so any map size works), then ``C -> hidden -> 1`` fully connected layers and a sigmoid."""

    def __init__(self, channels: int, dims: int, hidden: int):
        super().__init__()
        self.dims = dims
        self.blocks = nn.ModuleList([ConvNormAct(2 * channels, channels, dims=dims), ConvNormAct(channels, channels, dims=dims)])
        self.score = nn.Sequential(GlobalAvgPool(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, classes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """``classes`` ``(way, C, *S)``, ``queries`` ``(Q, C, *S)`` -> ``(Q, way)`` relation scores in [0, 1]."""
        q, way = len(queries), len(classes)
        pairs = torch.cat([classes[None].expand(q, *classes.shape), queries[:, None].expand(-1, way, *queries.shape[1:])], 2)
        x = pairs.flatten(0, 1)
        for block in self.blocks:
            x = block(x)
            if min(x.shape[2:]) >= 2:
                x = _MAX_POOLS[self.dims](x, 2)
        return torch.sigmoid(self.score(x)).view(q, way)


class MLPRelation(nn.Module):
    """The fallback for flat embeddings: ``2D -> hidden -> 1`` MLP with a sigmoid on concatenated (class, query) vectors."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, classes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """``classes`` ``(way, D)``, ``queries`` ``(Q, D)`` -> ``(Q, way)`` relation scores in [0, 1]."""
        q, way = len(queries), len(classes)
        pairs = torch.cat([classes[None].expand(q, -1, -1), queries[:, None].expand(-1, way, -1)], -1)
        return torch.sigmoid(self.net(pairs).squeeze(-1))
