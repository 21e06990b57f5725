"""KL divergence from soft targets to the predicted distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SoftTargetKLLoss(nn.Module):
    """``KL(target_probs || softmax(outputs))``, i.e. ``KLDivLoss(log_softmax(out), target_probs)``.

    ``torch.nn.KLDivLoss`` expects log-probabilities, which a head does not
    output; this takes logits. ``batchmean`` makes it the per-sample KL, the
    quantity the formula states (``mean`` would also divide by the class count).
    """

    target = "soft"

    def forward(self, logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
        return F.kl_div(logits.log_softmax(1), target_probs, reduction="batchmean")
