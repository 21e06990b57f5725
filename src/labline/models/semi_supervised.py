"""Semi-supervised classification: a few labeled samples plus many unlabeled ones (``task=pseudo_label``,
``task=fixmatch``, ``task=mean_teacher``), over any backbone and head.

Each training batch holds a labeled batch and ``unlabeled_ratio`` times as many unlabeled samples in the
views the task asks for (``labline.data.semi.SemiSupervisedDataModule``). The loss is the configured
supervised loss on the labeled batch plus ``unlabeled_weight * ramp(epoch) *`` the task's unlabeled term;
validation and test are those of ``ClassificationTask`` (accuracy, F1, ..., per-sample predictions), so
``task=classification`` with the same ``data.labels_per_class`` is the supervised-only baseline.

Logged per epoch besides the classification metrics: ``train/loss_supervised``, ``train/loss_unlabeled``,
``train/unlabeled_weight``, ``train/mask_rate`` (the fraction of unlabeled samples whose pseudo-label
passed the threshold) and ``train/pseudo_label_acc`` (how often a kept pseudo-label is right, read from the
labels the unlabeled part had before they were dropped: a diagnostic no loss sees; a user's own pool has
none).

All samples of a step go through the network in one batch, so batch norm normalises labeled and unlabeled
samples together (FixMatch's implementation does the same).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.losses.semi import (
    RAMPS,
    check_non_negative,
    check_probability,
    confidence_mask,
    consistency_mse,
    pseudo_label_loss,
    ramp_weight,
)
from labline.models.classification import FLUSH_BATCHES, ClassificationTask
from labline.models.ema_teacher import check_momentum, ema_update, frozen_copy, warmup_momentum
from labline.models.task import TaskContext

Batch = dict[str, Any]


class SemiSupervisedTask(ClassificationTask):
    """The shared training step; subclasses give ``unlabeled_terms``."""

    def __init__(self, context: TaskContext, unlabeled_weight: float = 1.0, threshold: float = 0.95,
                 warmup_epochs: float = 0, rampup_epochs: float = 0, ramp: str = "linear", monitor: str = "val/acc",
                 monitor_mode: str = "max", top_k: int | None = 5, **options: Any):
        super().__init__(context, monitor, monitor_mode, top_k, unlabeled_weight=unlabeled_weight, threshold=threshold,
                         warmup_epochs=warmup_epochs, rampup_epochs=rampup_epochs, ramp=ramp, **options)
        self.unlabeled_weight = check_non_negative("task.unlabeled_weight", unlabeled_weight)
        self.threshold = check_probability("task.threshold", threshold)
        self.warmup_epochs = check_non_negative("task.warmup_epochs", warmup_epochs)
        self.rampup_epochs = check_non_negative("task.rampup_epochs", rampup_epochs)
        if ramp not in RAMPS:
            raise ConfigError("task.ramp", f"unknown ramp '{ramp}'", RAMPS)
        self.ramp = ramp

    def student(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def unlabeled_terms(self, x: torch.Tensor, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor, torch.Tensor]:
        """``(labeled logits, unlabeled loss, mask, pseudo-labels)`` of one step."""
        raise NotImplementedError

    def _split(self, x: torch.Tensor, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """The student's logits of the labeled batch and of each unlabeled view, from one forward pass."""
        logits = self.student(torch.cat([x, *views]))
        return list(logits.split([len(x), *(len(v) for v in views)]))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        (x, y), (views, true_u) = batch["labeled"], batch["unlabeled"]
        logits, unlabeled, mask, pseudo = self.unlabeled_terms(x, views)
        supervised = self._loss(logits, y)[0]
        progress = self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches)
        weight = self.unlabeled_weight * ramp_weight(progress, self.warmup_epochs, self.rampup_epochs, self.ramp)
        loss = supervised + weight * unlabeled
        self.pending["train"].append((logits.detach(), y, loss.detach()))
        if len(self.pending["train"]) >= FLUSH_BATCHES:
            self._flush("train")
        n = len(true_u)
        logged = {"train/loss_supervised": (supervised, len(y)), "train/loss_unlabeled": (unlabeled, n),
                  "train/unlabeled_weight": (torch.tensor(weight), 1), "train/mask_rate": (mask.float().mean(), n)}
        known = mask & (true_u >= 0)
        if known.any():
            logged["train/pseudo_label_acc"] = ((pseudo[known] == true_u[known]).float().mean(), int(known.sum()))
        for key, (value, size) in logged.items():
            self.log(key, value.detach().float(), on_step=False, on_epoch=True, batch_size=size)
        return loss


class PseudoLabelTask(SemiSupervisedTask):
    """Pseudo-labelling (Lee 2013): the model's own confident predictions on unlabeled samples become their
    labels, after ``warmup_epochs`` on labels alone and a ramp of the unlabeled weight."""

    def unlabeled_terms(self, x, views):
        logits, *unlabeled = self._split(x, views)
        loss, mask, pseudo = pseudo_label_loss(unlabeled[0], unlabeled[0].softmax(1), self.threshold)
        return logits, loss, mask, pseudo


class FixMatchTask(SemiSupervisedTask):
    """FixMatch (Sohn et al. 2020): the pseudo-label of the weak view, where confident, is the target of the
    strong view (views ``[weak, strong]``)."""

    def unlabeled_terms(self, x, views):
        if len(views) != 2:
            raise ConfigError("task.datamodule.unlabeled_views", f"FixMatch needs [weak, strong], got {len(views)} views")
        logits, weak, strong = self._split(x, views)
        loss, mask, pseudo = pseudo_label_loss(strong, weak.softmax(1), self.threshold)
        return logits, loss, mask, pseudo


class MeanTeacherTask(SemiSupervisedTask):
    """Mean teacher (Tarvainen & Valpola 2017): the student's probabilities on one view of an unlabeled sample
    are pulled towards those of an EMA teacher on another view (``consistency_mse``); the teacher's momentum
    follows ``min(1 - 1/(step + 1), ema_momentum)``. With ``evaluate_teacher`` (the default) validation,
    checkpoints' predictions and the test use the teacher. ``threshold`` only defines the logged mask rate."""

    def __init__(self, context: TaskContext, ema_momentum: float = 0.99, evaluate_teacher: bool = True, **options: Any):
        super().__init__(context, ema_momentum=ema_momentum, evaluate_teacher=evaluate_teacher, **options)
        self.ema_momentum = check_momentum("task.ema_momentum", ema_momentum)
        self.evaluate_teacher = bool(evaluate_teacher)
        self.teacher = frozen_copy(nn.Sequential(self.backbone, self.head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x) if self.evaluate_teacher else self.student(x)

    def unlabeled_terms(self, x, views):
        if len(views) != 2:
            raise ConfigError("task.datamodule.unlabeled_views", f"mean teacher needs two views, got {len(views)}")
        logits, student_u = self._split(x, views[:1])
        self.teacher.eval()  # its batch-norm statistics are the EMA of the student's, not this batch's
        with torch.no_grad():
            teacher_u = self.teacher(views[1])
        mask, pseudo = confidence_mask(teacher_u.softmax(1), self.threshold)
        return logits, consistency_mse(student_u, teacher_u), mask, pseudo

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        ema_update(self.teacher, nn.Sequential(self.backbone, self.head), warmup_momentum(self.global_step, self.ema_momentum))
