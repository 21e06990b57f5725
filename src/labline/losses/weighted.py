"""A weighted sum of losses on the same outputs (cross-entropy plus Dice for segmentation: ``loss=ce_dice``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from labline.core.errors import ConfigError


class WeightedSum(nn.Module):
    """``sum_k weights[k] * terms[k](outputs, target)``; every term takes class indices.

    Cross-entropy scores each pixel on its own and is dominated by the background; Dice scores each class's
    overlap as a whole, so small objects weigh as much as large ones. Their sum is the usual compromise.
    """

    target = "index"

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]):
        super().__init__()
        if not terms or set(terms) != set(weights):
            raise ConfigError("loss.weights", f"must name each term once ({sorted(terms)}), got {sorted(weights)}")
        for name, term in terms.items():
            if getattr(term, "target", "index") != "index":
                raise ConfigError(f"loss.terms.{name}", f"compares with {term.target} labels; a sum needs index labels")
        bad = {k: w for k, w in weights.items() if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0}
        if bad:
            raise ConfigError("loss.weights", f"must be numbers >= 0, got {bad}")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {k: float(w) for k, w in weights.items()}

    def forward(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[name] * term(outputs, target) for name, term in self.terms.items())
