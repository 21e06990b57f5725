"""Self-distillation without labels (DINO, Caron et al. 2021): a student matches an EMA teacher across crops.

Student and teacher are the same network: backbone -> projection head (``head=projection``: an MLP to an
L2-normalised bottleneck) -> ``out_dim`` prototypes (a linear layer whose weight rows are kept at unit norm,
DINO's weight-normalised last layer). The teacher sees the global crops only, the student every crop
(``labline.data.multicrop``); the loss (``loss=dino``, ``labline.losses.dino``) centres and sharpens the
teacher's outputs. The teacher's momentum rises from ``teacher_momentum`` to ``final_teacher_momentum`` along a
cosine over the run's optimizer steps; both 0 make the teacher a copy of the student (no EMA teacher).

Labels are never trained on. Like the contrastive task, the frozen *teacher* backbone (the one DINO keeps) is
evaluated by a k-NN classifier (cosine, ``knn_k``) and a logistic-regression linear probe fitted on the clean
labeled training part: ``val/knn_acc`` every epoch (which picks the checkpoint), ``test/knn_acc``,
``test/linear_probe_acc`` (= ``test/acc``) at test. Logged per epoch to show collapse:
``train/teacher_entropy`` (mean entropy of the teacher's distribution; ``log out_dim`` = uniform collapse,
0 = one-dimension collapse) and ``train/teacher_student_kl`` (0 under either collapse), next to ``train/loss``
and ``val/loss`` (the loss between teacher and student on clean validation images).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labline.core.errors import ConfigError
from labline.data.multicrop import PROBE_EVAL, PROBE_FIT
from labline.losses.dino import DINOLoss
from labline.models.contrastive import knn_predict, linear_probe
from labline.models.ema_teacher import check_momentum, cosine_momentum, ema_update, frozen_copy
from labline.models.task import Task, TaskContext


class Prototypes(nn.Module):
    """Backbone -> projection head -> ``out_dim`` scores against unit-norm prototype vectors."""

    def __init__(self, backbone: nn.Module, head: nn.Module, out_dim: int):
        super().__init__()
        width = getattr(head, "out_features", None)
        if not isinstance(width, int):
            raise ConfigError("head", f"{type(head).__name__} does not say its output width", "head=projection")
        self.backbone, self.head = backbone, head
        self.prototypes = nn.Linear(width, out_dim, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.head(self.features(x)), F.normalize(self.prototypes.weight, dim=1))


class DINOTask(Task):
    per_sample_predictions = True

    def __init__(self, context: TaskContext, teacher_momentum: float = 0.996, final_teacher_momentum: float = 1.0,
                 knn_k: int = 5, probe_c: float = 1.0, monitor: str = "val/knn_acc", monitor_mode: str = "max"):
        super().__init__(context, monitor, monitor_mode, teacher_momentum=teacher_momentum,
                         final_teacher_momentum=final_teacher_momentum, knn_k=knn_k, probe_c=probe_c)
        self.loss_fn = context.loss()
        if not isinstance(self.loss_fn, DINOLoss):
            raise ConfigError("loss", f"task=dino needs the DINO loss, got {type(self.loss_fn).__name__}", "loss=dino")
        backbone, width = context.backbone()
        self.student = Prototypes(backbone, context.head(width), self.loss_fn.out_dim)
        self.teacher = frozen_copy(self.student)
        self.momentum = check_momentum("task.teacher_momentum", teacher_momentum)
        self.final_momentum = check_momentum("task.final_teacher_momentum", final_teacher_momentum)
        if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
            raise ConfigError("task.knn_k", f"must be a positive integer, got {knn_k!r}", "e.g. 5")
        if isinstance(probe_c, bool) or not isinstance(probe_c, (int, float)) or probe_c <= 0:
            raise ConfigError("task.probe_c", f"must be > 0, got {probe_c!r}", "e.g. 1.0")
        self.knn_k, self.probe_c = knn_k, float(probe_c)
        self.features: dict[int, list[torch.Tensor]] = {}
        self.targets: dict[int, list[torch.Tensor]] = {}
        self.val_losses: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The representation DINO keeps: the teacher backbone's features."""
        return self.teacher.features(x)

    def teacher_momentum(self) -> float:
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 0
        return cosine_momentum(self.global_step, total, self.momentum, self.final_momentum)

    def training_step(self, batch: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor], batch_idx: int) -> torch.Tensor:
        globals_, locals_, _ = batch
        n = len(globals_[0])
        self.teacher.eval()  # its batch-norm statistics are the EMA of the student's
        with torch.no_grad():
            teacher = list(self.teacher(torch.cat(globals_)).split(n))
        # One student pass per crop size: batch norm sees all crops of one resolution together.
        student = list(self.student(torch.cat(globals_)).split(n))
        if locals_:
            student += list(self.student(torch.cat(locals_)).split(n))
        loss, diagnostics = self.loss_fn(student, teacher, self.current_epoch)
        values = {"train/loss": loss.detach(), **{f"train/{k}": v for k, v in diagnostics.items()},
                  "train/teacher_momentum": torch.tensor(self.teacher_momentum()),
                  "train/teacher_temp": torch.tensor(self.loss_fn.teacher_temperature(self.current_epoch))}
        for key, value in values.items():
            self.log(key, value.float(), on_step=False, on_epoch=True, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        ema_update(self.teacher, self.student, self.teacher_momentum())

    def _start_probes(self) -> None:
        self.features, self.targets = {PROBE_FIT: [], PROBE_EVAL: []}, {PROBE_FIT: [], PROBE_EVAL: []}

    def _collect(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> torch.Tensor:
        x, y = batch
        self.features[dataloader_idx].append(self(x).float().cpu())
        self.targets[dataloader_idx].append(y.cpu())
        return x

    def _probe_sets(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        fit, scored = (torch.cat(self.features[i]) for i in (PROBE_FIT, PROBE_EVAL))
        fit_y, scored_y = (torch.cat(self.targets[i]) for i in (PROBE_FIT, PROBE_EVAL))
        return fit, fit_y, scored, scored_y

    def on_validation_epoch_start(self) -> None:
        self._start_probes()
        self.val_losses = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x = self._collect(batch, dataloader_idx)
        if dataloader_idx == PROBE_EVAL:
            self.val_losses.append(self.loss_fn.cross_entropy(self.student(x), self.teacher(x), self.current_epoch))

    def on_validation_epoch_end(self) -> None:
        if not self.features[PROBE_EVAL]:
            return
        fit, fit_y, scored, scored_y = self._probe_sets()
        knn = (knn_predict(fit, fit_y, scored, self.knn_k) == scored_y).float().mean()
        self.log_dict({"val/knn_acc": knn, "val/loss": torch.stack(self.val_losses).mean()}, prog_bar=True,
                      add_dataloader_idx=False)

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._start_probes()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        fit, fit_y, scored, scored_y = self._probe_sets()
        probs = linear_probe(fit.numpy(), fit_y.numpy(), scored.numpy(), self.num_classes, self.probe_c)
        probe_acc = float((probs.argmax(1) == scored_y.numpy()).mean())
        knn_acc = float((knn_predict(fit, fit_y, scored, self.knn_k) == scored_y).float().mean())
        self.log_dict({"test/acc": probe_acc, "test/linear_probe_acc": probe_acc, "test/knn_acc": knn_acc},
                      add_dataloader_idx=False)
        self.keep_test_predictions(torch.from_numpy(probs), scored_y)
