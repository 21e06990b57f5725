"""Supervised classification: backbone -> head -> loss, with accuracy, top-k, precision / recall / F1 and ranking metrics."""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import nn

from labline.core.errors import ConfigError
from labline.losses import labels
from labline.losses.multitask import MultiTaskLoss
from labline.metrics.classification import classification_metrics
from labline.models.heads.multitask import check_pairing
from labline.models.task import Task, TaskContext

Outputs = torch.Tensor | dict[str, torch.Tensor]
# Batches kept before one metric update: amortises torchmetrics' per-call cost, bounds the memory.
FLUSH_BATCHES = 32


class ClassificationTask(Task):
    """The default task.

    The loss gets the labels in the encoding it names (``loss.target``: index,
    onehot, multihot, soft); metrics always get class indices. With
    ``head=multitask`` the main head's outputs are the predictions and each
    head's loss is logged as ``part/loss_<name>`` next to the weighted ``part/loss``.
    """

    per_sample_predictions = True

    def __init__(self, context: TaskContext, monitor: str = "val/acc", monitor_mode: str = "max", top_k: int | None = 5,
                 **options: Any):
        super().__init__(context, monitor, monitor_mode, top_k=top_k, **options)
        self.backbone, width = context.backbone()
        self.head, self.loss_fn = context.head(width), context.loss()
        num_classes = self.num_classes
        self.loss_target = labels.check_encoding(getattr(self.loss_fn, "target", "index"))
        check_pairing(self.head, self.loss_fn, num_classes)
        self._check_loss()
        # ModuleDict keys must not shadow nn.Module attributes such as ``train``.
        self.metrics = nn.ModuleDict({f"{part}_metrics": classification_metrics(num_classes, top_k, ranking=part != "train")
                                      .clone(prefix=f"{part}/") for part in ("train", "val", "test")})
        self.losses = nn.ModuleDict({f"{part}_loss": torchmetrics.MeanMetric() for part in ("train", "val", "test")})
        self.term_losses = nn.ModuleDict()
        self.pending: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {"train": [], "val": [], "test": []}

    def _check_loss(self) -> None:
        """Score dummy outputs once, so a loss that cannot read this head's outputs (wrong width,
        wrong encoding, per-class weights of the wrong length) fails before training, not inside fit()."""
        widths = getattr(self.head, "out_features", self.num_classes)
        main = widths[self.head.main] if isinstance(widths, dict) else widths
        if main != self.num_classes:
            raise ConfigError("head", f"outputs {main} values per sample; classification needs one per class "
                              f"({self.num_classes})", "a classifier head: linear, mlp, multitask")
        outputs = {n: torch.zeros(2, w) for n, w in widths.items()} if isinstance(widths, dict) else torch.zeros(2, widths)
        try:
            with torch.no_grad():
                self._loss(outputs, torch.arange(2) % self.num_classes)
        except ConfigError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise ConfigError("loss", f"cannot score the head's outputs: {' '.join(str(exc).split())}") from None

    def forward(self, x: torch.Tensor) -> Outputs:
        return self.head(self.backbone(x))

    def main_logits(self, outputs: Outputs) -> torch.Tensor:
        """The class logits the task is scored on (a multi-task head's main output)."""
        return outputs[self.head.main] if isinstance(outputs, dict) else outputs

    def _loss(self, outputs: Outputs, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to optimise and, for multi-task heads, each head's own term."""
        if isinstance(self.loss_fn, MultiTaskLoss):
            terms = self.loss_fn.terms(outputs, y)
            return self.loss_fn.weighted(terms), terms
        return self.loss_fn(outputs, labels.encode(y, self.loss_target, outputs.shape[1])), {}

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Keeps the batch's outputs for the metrics, which are updated every ``FLUSH_BATCHES`` batches and
        logged once per epoch: calling ``self.log`` for ~10 metrics every step, and even updating them every
        step (~3 ms, about the default model's forward pass), cost more than the step (benches/overhead.py).
        The metric states are sums, so the values are the same as with per-step updates."""
        x, y = batch
        outputs = self(x)
        logits = self.main_logits(outputs)
        loss, terms = self._loss(outputs, y)
        self.pending[part].append((logits.detach(), y, loss.detach()))
        if len(self.pending[part]) >= FLUSH_BATCHES:
            self._flush(part)
        for name, term in terms.items():
            key = f"{part}_{name}"
            if key not in self.term_losses:
                self.term_losses[key] = torchmetrics.MeanMetric().to(self.device)
            self.term_losses[key].update(term.detach(), weight=len(y))
        return loss, logits

    def _flush(self, part: str) -> None:
        """One metric update for the kept batches (bounded memory: at most ``FLUSH_BATCHES`` batches)."""
        if not self.pending[part]:
            return
        logits, y, losses = zip(*self.pending[part], strict=True)
        self.pending[part] = []
        self.metrics[f"{part}_metrics"].update(torch.cat(logits).float().softmax(-1), torch.cat(y))
        self.losses[f"{part}_loss"].update(torch.stack(losses), weight=torch.tensor([len(t) for t in y], dtype=torch.float32,
                                                                                     device=losses[0].device))

    def _log_epoch(self, part: str) -> None:
        self._flush(part)
        if self.losses[f"{part}_loss"].update_count == 0:
            return
        values = {f"{part}/loss": self.losses[f"{part}_loss"].compute(), **self.metrics[f"{part}_metrics"].compute()}
        values |= {f"{part}/loss_{k.removeprefix(part + '_')}": m.compute() for k, m in self.term_losses.items()
                   if k.startswith(part + "_") and m.update_count}
        for metric in (self.losses[f"{part}_loss"], self.metrics[f"{part}_metrics"],
                       *(m for k, m in self.term_losses.items() if k.startswith(part + "_"))):
            metric.reset()
        self.log_dict({k: v.float() for k, v in values.items()}, prog_bar=part == "val")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        # The training epoch's batches are complete when its validation ends; logging the train metrics
        # here (not in on_train_epoch_end, which Lightning calls after the callbacks) puts them next to the
        # val metrics for the per-epoch curve callback.
        if not self.trainer.sanity_checking:
            self._log_epoch("train")
            self._log_epoch("val")
        else:
            self.pending["val"] = []
            self.losses["val_loss"].reset()
            self.metrics["val_metrics"].reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")  # only when this epoch had no validation

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        _, logits = self._step(batch, "test")
        self.keep_test_predictions(logits.float().softmax(-1), batch[1])

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
