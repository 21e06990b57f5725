"""Label encodings: what a datamodule's labels become before a loss sees them.

Datamodules hand out class indices. Each loss names the encoding it compares
its outputs with in a ``target`` attribute (absent means ``index``), and the
task converts the labels in its step, so the same integer labels feed
cross-entropy, BCE, MSE or a KL on soft targets. Metrics keep the indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labline.core.errors import ConfigError

# index: as the datamodule gives them; onehot: one 1 per row; multihot: a 1 per present class
# (multi-label); soft: a probability vector per row (a one-hot row is the degenerate case).
ENCODINGS = ("index", "onehot", "multihot", "soft")


def check_encoding(encoding: str, key: str = "loss.target") -> str:
    if encoding not in ENCODINGS:
        raise ConfigError(key, f"unknown label encoding '{encoding}'", ENCODINGS)
    return encoding


def onehot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N,)`` class indices -> ``(N, K)`` float rows with a single 1."""
    return F.one_hot(y.long(), num_classes).float()


def multihot(label_lists: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, M)`` class indices per sample, padded with negative values -> ``(N, K)`` 0/1 rows.

    Padding lets samples with different numbers of labels share one tensor;
    a class listed twice still counts once.
    """
    present = (label_lists >= 0).float()
    out = torch.zeros(label_lists.shape[0], num_classes, device=label_lists.device)
    return out.scatter_add_(1, label_lists.long().clamp(min=0), present).clamp_(max=1.0)


def smooth(y: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    """Label smoothing as CONCEPTS.md states it: 1-eps on the true class, eps spread over the K-1 others.

    [1,0,0] with eps=0.1 becomes [0.9,0.05,0.05]. torch's ``label_smoothing``
    spreads eps/K over all K classes instead ([0.933,0.033,0.033]); labline
    follows the convention its users' notes use. ``eps`` must lie in [0, 1).
    """
    if num_classes < 2:
        raise ValueError(f"label smoothing needs at least 2 classes, got {num_classes}")
    off = eps / (num_classes - 1)
    return onehot(y, num_classes) * (1.0 - eps - off) + off


def encode(y: torch.Tensor, encoding: str, num_classes: int) -> torch.Tensor:
    """Labels in the encoding a loss expects.

    Labels that already are one vector per sample (float or bool ``(N, K)``, e.g. soft
    labels from a teacher or multi-hot labels from a multi-label dataset) pass
    through for every vector encoding; integer ``(N, M)`` label lists become multi-hot.
    """
    check_encoding(encoding)
    if encoding == "index":
        return y
    if y.is_floating_point() or y.dtype == torch.bool:
        if y.ndim != 2 or y.shape[1] != num_classes:
            raise ValueError(f"{encoding} labels must have shape (N, {num_classes}), got {tuple(y.shape)}")
        return y.float()
    if y.ndim == 2 and encoding == "multihot":
        return multihot(y, num_classes)
    return onehot(y, num_classes)
