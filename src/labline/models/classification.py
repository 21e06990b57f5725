"""Supervised classification: backbone -> head -> loss, with accuracy and macro F1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics
from torch import nn

from labline.optim import configure_optimization


class ClassificationTask(pl.LightningModule):
    """The default task. Hyperparameters hold the resolved config, never modules,
    so checkpoints load with ``torch.load(weights_only=True)``."""

    def __init__(self, backbone: nn.Module, head: nn.Module, loss: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None, num_classes: int, config: dict[str, Any] | None = None,
                 monitor: str = "val/acc", monitor_mode: str = "max"):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "head", "loss", "optimizer", "scheduler"])
        self.backbone, self.head, self.loss_fn = backbone, head, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.monitor, self.monitor_mode = monitor, monitor_mode
        metrics = torchmetrics.MetricCollection({
            "acc": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro"),
            "f1_macro": torchmetrics.classification.MulticlassF1Score(num_classes, average="macro"),
        })
        # ModuleDict keys must not shadow nn.Module attributes such as ``train``.
        self.metrics = nn.ModuleDict({f"{part}_metrics": metrics.clone(prefix=f"{part}/") for part in ("train", "val", "test")})
        self.test_probs: list[torch.Tensor] = []
        self.test_targets: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], part: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        self.metrics[f"{part}_metrics"].update(logits.detach(), y)
        self.log(f"{part}/loss", loss, on_step=False, on_epoch=True, prog_bar=part != "train", batch_size=len(y))
        self.log_dict(self.metrics[f"{part}_metrics"], on_step=False, on_epoch=True, prog_bar=part == "val", batch_size=len(y))
        return loss, logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        _, logits = self._step(batch, "test")
        self.test_probs.append(logits.float().softmax(-1).cpu())
        self.test_targets.append(batch[1].cpu())

    def on_test_epoch_start(self) -> None:
        self.test_probs, self.test_targets = [], []

    def configure_optimizers(self) -> Any:
        return configure_optimization(self, self.optimizer_factory, self.scheduler_factory)
