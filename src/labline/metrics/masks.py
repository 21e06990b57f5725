"""Overlap measures for segmentation masks.

Masks are tensors of class indices (``mean_iou``, ``pixel_accuracy``) or
booleans (``mask_iou``, ``dice_score``) of any shape; ``dice`` also takes
probabilities, which is what makes it a loss (``labline.losses.dice``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """mIoU of two label maps: per-class IoU averaged over the classes present in either map.

    Classes absent from both say nothing about the prediction, so they are left
    out of the mean rather than counted as 0 or 1.
    """
    keep = _keep(target, ignore_index)
    pred, target = pred[keep].long(), target[keep].long()
    confusion = torch.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    inter = confusion.diag().float()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    present = union > 0
    return (inter[present] / union[present]).mean()


def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Fraction of (non-ignored) pixels whose predicted class is the true one."""
    keep = _keep(target, ignore_index)
    return (pred[keep] == target[keep]).float().mean()
