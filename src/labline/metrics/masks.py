"""Overlap measures for segmentation masks.

Masks are tensors of class indices (``mean_iou``, ``pixel_accuracy``) or
booleans (``mask_iou``, ``dice_score``) of any shape; ``dice`` also takes
probabilities, which is what makes it a loss (``labline.losses.dice``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from labline.core.io import write_json


def dice(pred: torch.Tensor, target: torch.Tensor, dims: Sequence[int] | None = None, smooth: float = 1e-6) -> torch.Tensor:
    """``(2 |P∩T| + smooth) / (|P| + |T| + smooth)``, summed over ``dims`` (all when None).

    The smooth term keeps two empty masks at 1 instead of 0/0 and, for the
    loss, keeps the gradient finite on classes absent from a batch.
    """
    pred, target = pred.float(), target.float()
    dims = tuple(range(pred.ndim)) if dims is None else tuple(dims)
    inter = (pred * target).sum(dims)
    return (2.0 * inter + smooth) / (pred.sum(dims) + target.sum(dims) + smooth)


def dice_score(pred_mask: torch.Tensor, target_mask: torch.Tensor, smooth: float = 1e-6) -> torch.Tensor:
    """Dice of two binary masks (nonzero = foreground)."""
    return dice(pred_mask != 0, target_mask != 0, smooth=smooth)


def mask_iou(pred_mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Intersection over union of two binary masks; two empty masks agree perfectly (1)."""
    pred, target = pred_mask != 0, target_mask != 0
    union = (pred | target).sum()
    if union == 0:
        return torch.tensor(1.0)
    return (pred & target).sum() / union


def _keep(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    return torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index


def label_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                    ignore_index: int | None = None) -> torch.Tensor:
    """``(K, K)`` pixel counts of two label maps: row the true class, column the predicted one."""
    keep = _keep(target, ignore_index)
    pred, target = pred[keep].long(), target[keep].long()
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """IoU per class from a confusion matrix; NaN for a class absent from both prediction and target."""
    inter = confusion.diag().float()
    union = (confusion.sum(0) + confusion.sum(1)).float() - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))


def class_dice(confusion: torch.Tensor) -> torch.Tensor:
    """Dice per class, ``2 |P∩T| / (|P| + |T|)``; NaN for a class absent from both."""
    inter = confusion.diag().float()
    sizes = (confusion.sum(0) + confusion.sum(1)).float()
    return torch.where(sizes > 0, 2 * inter / sizes.clamp(min=1), torch.full_like(inter, float("nan")))


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """mIoU of two label maps: per-class IoU averaged over the classes present in either map.

    Classes absent from both say nothing about the prediction, so they are left
    out of the mean rather than counted as 0 or 1.
    """
    return class_iou(label_confusion(pred, target, num_classes, ignore_index)).nanmean()


def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Fraction of (non-ignored) pixels whose predicted class is the true one."""
    keep = _keep(target, ignore_index)
    return (pred[keep] == target[keep]).float().mean()


def mask_scores(confusion: torch.Tensor, classes: list[str]) -> dict[str, torch.Tensor]:
    """Pixel accuracy, mIoU, mean Dice and per-class IoU (present classes only) of a pixel confusion matrix:
    one definition for a segmentation run's epochs and an ensemble of its masks."""
    iou, dice = class_iou(confusion), class_dice(confusion)
    scores = {"pixel_acc": confusion.diag().sum().float() / confusion.sum().clamp(min=1), "miou": iou.nanmean(),
              "dice": dice.nanmean()}
    return scores | {f"iou_{name}": value for name, value in zip(classes, iou, strict=True) if not value.isnan()}


def write_class_table(confusion: torch.Tensor, classes: list[str], folder: Path) -> list[Path]:
    """``class_iou.json`` and ``class_iou.md``: IoU, Dice and pixel count per class (None / "absent" for a class
    in no mask). A segmentation run and an ensemble of its masks both write it, and an ensemble reads its members'
    class names from it."""
    iou, dice = class_iou(confusion), class_dice(confusion)
    rows = [{"class": name, "iou": None if iou[k].isnan() else round(float(iou[k]), 6),
             "dice": None if dice[k].isnan() else round(float(dice[k]), 6), "pixels": int(confusion[k].sum())}
            for k, name in enumerate(classes)]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(rows, folder / "class_iou.json")
    lines = ["| class | IoU | Dice | pixels |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['class']} | {_cell(r['iou'])} | {_cell(r['dice'])} | {r['pixels']} |" for r in rows]
    (folder / "class_iou.md").write_text("\n".join(lines) + "\n")
    return [folder / "class_iou.json", folder / "class_iou.md"]


def _cell(value: float | None) -> str:
    return "absent" if value is None else f"{value:.4f}"
