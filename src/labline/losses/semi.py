"""The unlabeled terms of semi-supervised learning: confidence-masked pseudo-labels, consistency, weight ramps.

- Pseudo-labels (Lee 2013; FixMatch, Sohn et al. 2020): the class of highest predicted probability, kept where
  that probability reaches ``threshold``; the loss is the cross-entropy to it, averaged over *all* unlabeled
  samples (masked ones count as zero), as FixMatch does, so the term grows as confidence spreads.
- Consistency (mean teacher, Tarvainen & Valpola 2017): the squared distance between the student's and the
  teacher's class probabilities, summed over classes and averaged over samples.
- Ramps: the unlabeled weight starts at 0 and reaches its full value after ``warmup + rampup`` epochs,
  linearly (Lee 2013) or along ``exp(-5 (1 - t)^2)`` (Laine & Aila 2017, used by mean teacher).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labline.core.errors import ConfigError

RAMPS = ("linear", "sigmoid")


def confidence_mask(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, pseudo_labels)`` of ``(N, K)`` probabilities: the argmax class, and whether its probability >= threshold."""
    confidence, labels = probs.max(dim=1)
    return confidence >= threshold, labels


def pseudo_label_loss(logits: torch.Tensor, target_probs: torch.Tensor,
                      threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked cross-entropy of ``logits`` to the pseudo-labels of ``target_probs`` (no gradient through them).

    Returns ``(loss, mask, pseudo_labels)``; the loss is the mean over every sample, masked ones contributing 0."""
    mask, labels = confidence_mask(target_probs.detach(), threshold)
    loss = (F.cross_entropy(logits, labels, reduction="none") * mask.float()).mean() if len(logits) else logits.sum() * 0
    return loss, mask, labels


def consistency_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_k (softmax(s_i)_k - softmax(t_i)_k)^2``; the teacher's side carries no gradient."""
    diff = student_logits.softmax(1) - teacher_logits.detach().softmax(1)
    return (diff**2).sum(1).mean()


def ramp_weight(epoch: float, warmup: float, rampup: float, kind: str = "linear") -> float:
    """The fraction of the unlabeled weight used at ``epoch`` (fractional epochs allowed): 0 during ``warmup``
    epochs, then rising to 1 over ``rampup`` epochs (at once when ``rampup`` is 0)."""
    if kind not in RAMPS:
        raise ConfigError("task.ramp", f"unknown ramp '{kind}'", RAMPS)
    if epoch < warmup:
        return 0.0
    if rampup <= 0:
        return 1.0
    t = min(1.0, (epoch - warmup) / rampup)
    return t if kind == "linear" else math.exp(-5.0 * (1.0 - t) ** 2)


def check_probability(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"must be in [0, 1], got {value!r}", "e.g. 0.95 (FixMatch)")
    return float(value)


def check_non_negative(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(key, f"must be >= 0, got {value!r}")
    return float(value)
