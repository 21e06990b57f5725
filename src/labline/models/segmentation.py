"""Semantic segmentation: an encoder-decoder backbone gives a dense feature map, a per-pixel head class scores.

Targets are masks of class indices ``(N, H, W)`` (``data=scenes``); the backbone (``unet``, ``fcn``) keeps
the input's resolution and the head (``pixel``) is a 1x1 conv. Every loss that reads ``(N, K, H, W)``
scores against index masks works: ``loss=cross_entropy``, ``dice``, ``ce_dice`` (their weighted sum).

Per epoch, from one pixel confusion matrix per part: pixel accuracy, mIoU (over the classes present in
the prediction or the target: an absent class says nothing), mean Dice, and the IoU of every present
class (``part/iou_<class>``). At test: ``class_iou.json`` / ``class_iou.md`` (IoU and Dice per class) and
``masks.png`` (image, true mask, predicted mask of the first test scenes), and the per-pixel class
probabilities of the val and test parts as ``predictions/{val,test}.npz`` (float16), which is what
``labline ensemble`` averages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchmetrics
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from labline.core.errors import ConfigError
from labline.metrics.masks import mask_scores, write_class_table
from labline.models.layers import positive_int
from labline.models.task import Task, TaskContext

PARTS = ("train", "val", "test")


class SegmentationTask(Task):
    """Per-pixel classification of a mask; ``examples`` test scenes are drawn in ``masks.png``.

    Its per-pixel probabilities ``(N, K, H, W)`` are kept like a classifier's rows, so a run saves
    ``predictions/{val,test}.npz`` and segmentation runs can be ensembled mask by mask."""

    per_sample_predictions = True

    def __init__(self, context: TaskContext, monitor: str = "val/miou", monitor_mode: str = "max", examples: int = 6):
        super().__init__(context, monitor, monitor_mode, examples=examples)
        self.backbone, width = context.backbone()
        self.head, self.loss_fn = context.head(width), context.loss()
        self.classes = list(context.classes)
        self.examples = positive_int(examples, "task.examples")
        self._check_parts(context.input_shape)
        # ModuleDict keys must not shadow nn.Module attributes such as ``train``.
        self.confusion = nn.ModuleDict({f"{p}_confusion": MulticlassConfusionMatrix(self.num_classes) for p in PARTS})
        self.losses = nn.ModuleDict({f"{p}_loss": torchmetrics.MeanMetric() for p in PARTS})
        self.shown: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.test_confusion: torch.Tensor | None = None

    def _check_parts(self, input_shape: tuple[int, ...]) -> None:
        """One dummy forward and loss, so a pooling backbone, a vector head or a loss that cannot read masks
        fails before training with the part to change."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                features = self.backbone(torch.zeros(2, *input_shape))
                if features.ndim != 4 or tuple(features.shape[-2:]) != tuple(input_shape[-2:]):
                    raise ConfigError("backbone", f"outputs {tuple(features.shape)} for inputs {(2, *input_shape)}; "
                                      "segmentation needs a dense map at the input's size", "unet, fcn")
                logits = self.head(features)
        except ConfigError:
            raise
        except RuntimeError as exc:
            raise ConfigError("head", f"cannot read a feature map: {' '.join(str(exc).split())}", "pixel") from None
        finally:
            self.train(was_training)
        if logits.shape[:2] != (2, self.num_classes) or logits.shape[2:] != features.shape[2:]:
            raise ConfigError("head", f"outputs {tuple(logits.shape)}; segmentation needs (N, {self.num_classes}, H, W)",
                              "pixel")
        if getattr(self.loss_fn, "target", "index") != "index":
            raise ConfigError("loss", f"compares with {self.loss_fn.target} labels, not masks of class indices",
                              "cross_entropy, dice, ce_dice")
        try:
            self.loss_fn(logits, torch.zeros(2, *logits.shape[2:], dtype=torch.long))
        except (RuntimeError, ValueError, IndexError) as exc:
            raise ConfigError("loss", f"cannot score masks: {' '.join(str(exc).split())}",
                              "cross_entropy, dice, ce_dice") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, K, H, W)``."""
        return self.head(self.backbone(x))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], part: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, detached logits and the predicted mask (one argmax per batch, shared by the metrics and the figure)."""
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        pred = logits.detach().argmax(1)
        self.confusion[f"{part}_confusion"].update(pred, y)
        self.losses[f"{part}_loss"].update(loss.detach(), weight=len(y))
        return loss, logits.detach(), pred

    def _log_epoch(self, part: str) -> torch.Tensor | None:
        if self.losses[f"{part}_loss"].update_count == 0:
            return None
        confusion = self.confusion[f"{part}_confusion"].compute()
        values = {f"{part}/loss": self.losses[f"{part}_loss"].compute(),
                  **{f"{part}/{k}": v for k, v in mask_scores(confusion, self.classes).items()}}
        self.confusion[f"{part}_confusion"].reset()
        self.losses[f"{part}_loss"].reset()
        self.log_dict({k: v.float() for k, v in values.items()}, prog_bar=False)
        return confusion

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        # Like classification: the train metrics are logged beside the val ones for the curves callback.
        if self.trainer.sanity_checking:
            self.confusion["val_confusion"].reset()
            self.losses["val_loss"].reset()
            return
        self._log_epoch("train")
        self._log_epoch("val")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")  # only when this epoch had no validation

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.shown, self.test_confusion = [], None

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        _, logits, pred = self._step(batch, "test")
        self.keep_test_predictions(logits.float().softmax(1), y)
        room = self.examples - len(self.shown)
        for i in range(min(room, len(y))):
            self.shown.append((x[i].float().cpu().numpy(), y[i].cpu().numpy(), pred[i].cpu().numpy()))

    def on_test_epoch_end(self) -> None:
        self.test_confusion = self._log_epoch("test")

    def test_artifacts(self, folder: Path) -> list[Path]:
        """The per-class IoU table (JSON and markdown) and the mask figure of the last test loop."""
        if self.test_confusion is None:
            return []
        return [*write_class_table(self.test_confusion.cpu(), self.classes, folder),
                masks_figure(self.shown, self.classes, folder / "masks.png")]


def masks_figure(shown: list[tuple[np.ndarray, np.ndarray, np.ndarray]], classes: list[str], path: Path) -> Path:
    """One row per scene: the image, the true mask and the predicted mask over it (background left clear)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = plt.get_cmap("tab10").colors
    cmap = ListedColormap([colours[k % len(colours)] for k in range(len(classes))])
    fig, axes = plt.subplots(max(1, len(shown)), 3, figsize=(6, 2 * max(1, len(shown)) + 0.6), squeeze=False)
    for row, (image, truth, pred) in zip(axes, shown, strict=False):
        picture = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
        for ax, mask in zip(row, (None, truth, pred), strict=True):
            ax.imshow(picture, cmap="gray")
            if mask is not None:
                ax.imshow(np.ma.masked_equal(mask, 0), cmap=cmap, vmin=0, vmax=len(classes) - 1, alpha=0.6,
                          interpolation="nearest")
    for ax, title in zip(axes[0], ("image", "true mask", "predicted mask"), strict=True):
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(handles=[Patch(color=cmap(k), label=name) for k, name in enumerate(classes) if k > 0],
               loc="lower center", ncol=len(classes) - 1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
