"""Projection head for contrastive learning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labline.models import layers
from labline.models.heads.mlp import mlp


class ProjectionHead(nn.Module):
    """MLP mapping features to a low-dimensional embedding, L2-normalised (SimCLR-style).

    Contrastive losses compare embeddings by cosine similarity, so the output
    lies on the unit sphere when ``normalize`` is on. Its width is ``dim``, not a
    class count: ``num_classes`` is accepted only because every head is built
    with it, and classification tasks refuse this head.
    """

    def __init__(self, in_features: int, num_classes: int | None = None, hidden: Sequence[int] = (256,), dim: int = 128,
                 activation: str = "relu", normalize: bool = True):
        super().__init__()
        self.net = mlp(in_features, hidden, layers.positive_int(dim, "head.dim"), activation, dropout=0.0)
        self.normalize = normalize
        self.out_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return F.normalize(z, dim=1) if self.normalize else z
