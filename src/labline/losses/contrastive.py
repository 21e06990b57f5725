"""Contrastive losses over two views of a batch: NT-Xent (InfoNCE), supervised contrastive, batch-hard triplet.

Every loss takes the embeddings of both views, ``z1`` and ``z2`` ``(N, D)`` (row i
of each is the same sample), and the class labels ``(N,)``, which the
self-supervised NT-Xent ignores. Embeddings are L2-normalised here, so the losses
compare directions whatever head produced them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labline.core.errors import ConfigError


def _temperature(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError("loss.temperature", f"must be > 0, got {value!r}", "e.g. 0.1 .. 0.5")
    return float(value)


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon ``L_out`` (Khosla et al. 2020): for each anchor, the mean over its positives p of
    ``-log(exp(s_ap / t) / sum_{k != a} exp(s_ak / t))`` with cosine similarities ``s``; averaged over anchors.

    Positives are the other embeddings with the anchor's label; anchors without one are skipped. With a
    distinct label per sample (each sample's two views the only positives) this is NT-Xent.
    """
    z = F.normalize(z.float(), dim=1)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits.log_softmax(1).masked_fill(self_mask, 0.0)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(1)
    has = count > 0
    return -((log_prob * positives).sum(1)[has] / count[has]).mean()


class ContrastiveLoss(nn.Module):
    """Base class: what ``task=contrastive`` accepts as its loss, ``forward(z1, z2, labels)``."""

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NTXentLoss(ContrastiveLoss):
    """SimCLR's NT-Xent / InfoNCE (Chen et al. 2020): each view must pick out the other view of its sample
    among the 2N - 2 other embeddings of the batch. Labels are not used: self-supervised."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = _temperature(temperature)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        sample = torch.arange(len(z1), device=z1.device)
        return supervised_contrastive(torch.cat([z1, z2]), torch.cat([sample, sample]), self.temperature)


class SupConLoss(ContrastiveLoss):
    """Supervised contrastive: every embedding of the same class, in either view, is a positive."""

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = _temperature(temperature)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return supervised_contrastive(torch.cat([z1, z2]), torch.cat([labels, labels]), self.temperature)


def hardest_negatives(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For each row, the index of the closest embedding of another class (-1 where there is none)."""
    other = labels[:, None] != labels[None, :]
    masked = distances.masked_fill(~other, float("inf"))
    return torch.where(other.any(1), masked.argmin(1), torch.full_like(labels, -1))


def hardest_positives(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For each row, the index of the farthest other embedding of its class (-1 where there is none)."""
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    masked = distances.masked_fill(~same, float("-inf"))
    return torch.where(same.any(1), masked.argmax(1), torch.full_like(labels, -1))


class TripletLoss(ContrastiveLoss):
    """Batch-hard triplet loss (Hermans et al. 2017): ``mean relu(d(a, p) - d(a, n) + margin)`` with, for every
    anchor among both views, its farthest positive and its closest negative (hard-negative mining).
    Euclidean distances between unit vectors, so a margin is a fraction of the sphere's diameter 2."""

    def __init__(self, margin: float = 0.2):
        super().__init__()
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
            raise ConfigError("loss.margin", f"must be >= 0, got {margin!r}", "e.g. 0.2 .. 0.5")
        self.margin = float(margin)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        both = torch.cat([labels, labels])
        # sqrt(2 - 2 cos) from the Gram matrix; the clamp keeps the gradient finite at distance 0.
        distances = (2.0 - 2.0 * z @ z.T).clamp_min(1e-12).sqrt()
        positive, negative = hardest_positives(distances, both), hardest_negatives(distances, both)
        valid = (positive >= 0) & (negative >= 0)
        if not valid.any():
            return distances.sum() * 0.0
        rows = valid.nonzero().flatten()
        return F.relu(distances[rows, positive[rows]] - distances[rows, negative[rows]] + self.margin).mean()
