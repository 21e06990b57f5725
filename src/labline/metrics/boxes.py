"""Overlap of axis-aligned boxes ``(x1, y1, x2, y2)``, every box of ``a`` against every box of ``b``.

All three return an ``(N, M)`` matrix, the form matching and NMS need. GIoU and
DIoU stay informative when boxes do not overlap (IoU is then 0 whatever the
distance): GIoU subtracts the empty share of the smallest enclosing box, DIoU
the squared centre distance over the enclosing box's squared diagonal.
"""

from __future__ import annotations

import torch


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _iou_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return inter / union, union


def _enclosing(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Corners of the smallest box holding both boxes of each pair."""
    return torch.minimum(a[:, None, :2], b[None, :, :2]), torch.maximum(a[:, None, 2:], b[None, :, 2:])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _iou_union(a, b)[0]


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``IoU - (|C| - |A∪B|) / |C|`` with C the enclosing box; in (-1, 1]."""
    iou, union = _iou_union(a, b)
    top_left, bottom_right = _enclosing(a, b)
    hull = (bottom_right - top_left).prod(-1)
    return iou - (hull - union) / hull


def distance_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``IoU - d^2 / c^2``: d the distance between centres, c the enclosing box's diagonal."""
    iou, _ = _iou_union(a, b)
    top_left, bottom_right = _enclosing(a, b)
    diagonal = ((bottom_right - top_left) ** 2).sum(-1)
    centre_a, centre_b = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    distance = ((centre_a[:, None] - centre_b[None, :]) ** 2).sum(-1)
    return iou - distance / diagonal
