"""DINO's self-distillation loss (Caron et al. 2021), its running centre, and what shows collapse.

The teacher's output on each global crop is centred (``t - c``) and sharpened (a low temperature), the
student's output on every crop softened by a higher one; the loss is the cross-entropy
``-sum_k p_t,k log p_s,k`` averaged over every (teacher crop, student crop) pair of *different* crops. The
centre is a running mean of the teacher's outputs, ``c <- m c + (1 - m) mean_batch(t)``, updated after each
step. Centering alone pushes towards the uniform output, sharpening alone towards one dimension; together
they balance (the paper's Fig. 7). The parts a ``dino_parts`` ablation removes:

- ``centering: false``: the centre stays 0;
- ``sharpening: false``: the teacher uses the student's temperature (no sharpening).

Collapse diagnostics, per step: the mean entropy of the teacher's (centred, sharpened) distribution
(``log K`` when it collapses to uniform, 0 when it collapses to one dimension) and the KL divergence between
teacher and student (0 in either collapse: the student then just copies a constant).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError


def _positive(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(key, f"must be > 0, got {value!r}")
    return float(value)


def sharpen(logits: torch.Tensor, centre: torch.Tensor | float, temperature: float) -> torch.Tensor:
    """``softmax((logits - centre) / temperature)``: a lower temperature concentrates the mass."""
    return ((logits - centre) / temperature).softmax(-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of ``probs``."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()


class DINOLoss(nn.Module):
    """``forward(student_outputs, teacher_outputs, epoch)``: lists of ``(B, K)`` outputs per crop, the teacher's
    for the global crops only (the first ``len(teacher_outputs)`` student crops are the same global crops)."""

    def __init__(self, out_dim: int = 256, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 warmup_teacher_temp: float | None = None, warmup_epochs: int = 0, center_momentum: float = 0.9,
                 centering: bool = True, sharpening: bool = True):
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 2:
            raise ConfigError("loss.out_dim", f"must be an integer >= 2, got {out_dim!r}", "e.g. 256")
        if not 0.0 <= center_momentum < 1.0:
            raise ConfigError("loss.center_momentum", f"must be in [0, 1), got {center_momentum}", "e.g. 0.9")
        self.out_dim, self.centering, self.sharpening = out_dim, bool(centering), bool(sharpening)
        self.student_temp = _positive("loss.student_temp", student_temp)
        self.teacher_temp = _positive("loss.teacher_temp", teacher_temp)
        self.warmup_teacher_temp = _positive("loss.warmup_teacher_temp", warmup_teacher_temp or teacher_temp)
        self.warmup_epochs, self.center_momentum = int(warmup_epochs), float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: int) -> float:
        """Linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp``; the student's without sharpening."""
        if not self.sharpening:
            return self.student_temp
        if epoch >= self.warmup_epochs:
            return self.teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * epoch / self.warmup_epochs

    def teacher_probs(self, teacher_outputs: Sequence[torch.Tensor], epoch: int) -> list[torch.Tensor]:
        centre = self.center if self.centering else 0.0
        return [sharpen(t.detach().float(), centre, self.teacher_temperature(epoch)) for t in teacher_outputs]

    def forward(self, student_outputs: Sequence[torch.Tensor], teacher_outputs: Sequence[torch.Tensor],
                epoch: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, diagnostics)``: ``teacher_entropy`` and ``teacher_student_kl`` (both detached). The centre is
        updated afterwards, in training only, from this batch's teacher outputs."""
        targets = self.teacher_probs(teacher_outputs, epoch)
        log_students = [(s.float() / self.student_temp).log_softmax(-1) for s in student_outputs]
        total, kl, pairs = 0.0, 0.0, 0
        for i, p_t in enumerate(targets):
            for j, log_s in enumerate(log_students):
                if i == j:
                    continue
                cross = -(p_t * log_s).sum(-1).mean()
                total = total + cross
                kl = kl + cross.detach() - entropy(p_t)
                pairs += 1
        if pairs == 0:
            raise ConfigError("task.datamodule", "DINO needs at least two crops per sample", "global_crops=2")
        if self.training:
            self.update_center(teacher_outputs)
        return total / pairs, {"teacher_entropy": torch.stack([entropy(p) for p in targets]).mean(),
                               "teacher_student_kl": kl / pairs}

    @torch.no_grad()
    def cross_entropy(self, student: torch.Tensor, teacher: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """The loss of one (teacher, student) pair of outputs, without a centre update (validation)."""
        (p_t,) = self.teacher_probs([teacher], epoch)
        return -(p_t * (student.float() / self.student_temp).log_softmax(-1)).sum(-1).mean()

    @torch.no_grad()
    def update_center(self, teacher_outputs: Sequence[torch.Tensor]) -> None:
        """``c <- m c + (1 - m) mean(t)`` over every global crop of the batch."""
        if not self.centering:
            return
        batch_mean = torch.cat([t.detach().float() for t in teacher_outputs]).mean(0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1.0 - self.center_momentum)
