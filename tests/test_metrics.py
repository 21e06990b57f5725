"""Metric functions against values computed by hand (CONCEPTS.md gives several)."""

from __future__ import annotations

import pytest
import torch

from labline.core.errors import ConfigError
from labline.metrics.boxes import box_iou, distance_box_iou, generalized_box_iou
from labline.metrics.classification import classification_metrics
from labline.metrics.complexity import model_complexity
from labline.metrics.masks import dice_score, mask_iou, mean_iou, pixel_accuracy
from labline.metrics.similarity import cosine_similarity

A = torch.tensor([[2.0, 2.0, 5.0, 5.0]])
B = torch.tensor([[3.0, 3.0, 6.0, 6.0]])


def test_box_overlaps_of_the_concepts_example() -> None:
    # intersection 2x2 = 4, union 9 + 9 - 4 = 14
    assert box_iou(A, B).item() == pytest.approx(4 / 14, abs=1e-4)
    # enclosing box (2,2)-(6,6) has area 16: GIoU = 4/14 - (16 - 14)/16
    assert generalized_box_iou(A, B).item() == pytest.approx(4 / 14 - 2 / 16, abs=1e-6)
    # centres (3.5,3.5) and (4.5,4.5): d^2 = 2; enclosing diagonal^2 = 4^2 + 4^2 = 32
    assert distance_box_iou(A, B).item() == pytest.approx(4 / 14 - 2 / 32, abs=1e-6)


def test_box_overlaps_are_pairwise_and_penalise_distance() -> None:
    far = torch.tensor([[10.0, 10.0, 13.0, 13.0]])
    boxes = torch.cat([A, B])
    assert box_iou(boxes, torch.cat([A, far])).shape == (2, 2)
    assert box_iou(A, A).item() == pytest.approx(1.0)
    assert box_iou(A, far).item() == 0
    # disjoint: enclosing (2,2)-(13,13) area 121, union 18
    assert generalized_box_iou(A, far).item() == pytest.approx(-(121 - 18) / 121)
    assert distance_box_iou(A, far) < distance_box_iou(A, B)


def test_mask_measures() -> None:
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    other = torch.tensor([[1, 0, 0], [0, 1, 1]])
    assert dice_score(mask, mask).item() == pytest.approx(1.0)
    assert dice_score(mask, other).item() == pytest.approx(2 * 2 / (3 + 3))
    assert mask_iou(mask, other).item() == pytest.approx(2 / 4)
    assert mask_iou(torch.zeros(2, 2), torch.zeros(2, 2)).item() == 1.0
    pred = torch.tensor([0, 0, 1, 1, 2, 0])
    true = torch.tensor([0, 1, 1, 1, 2, 255])
    # class 0: inter 1, union 2; class 1: inter 2, union 3; class 2: inter 1, union 1 (pixel 255 ignored)
    assert mean_iou(pred, true, 3, ignore_index=255).item() == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert pixel_accuracy(pred, true, ignore_index=255).item() == pytest.approx(4 / 5)


def test_cosine_similarity_of_the_concepts_example() -> None:
    sims = cosine_similarity(torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]]), torch.tensor([[4.0, 5.0, 6.0]]))
    assert sims.shape == (2, 1)
    assert sims[0, 0].item() == pytest.approx(0.9746, abs=1e-4)
    assert sims[1, 0].item() == pytest.approx(4 / 77**0.5, abs=1e-6)


def test_precision_recall_f1_by_hand() -> None:
    # class 1: TP = 2, FP = 1, FN = 1 -> precision 2/3, recall 2/3; class 0: TP 1, FP 1, FN 1 -> 1/2, 1/2
    # class 2: TP 1, FP 0, FN 0
    preds = torch.tensor([1, 1, 1, 0, 0, 2])
    target = torch.tensor([1, 1, 0, 1, 0, 2])
    metrics = classification_metrics(3, top_k=2, ranking=False)
    values = {k: v.item() for k, v in metrics(torch.nn.functional.one_hot(preds, 3).float(), target).items()}
    assert values["precision_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert values["recall_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert values["precision_micro"] == pytest.approx(4 / 6)
    assert values["acc"] == pytest.approx(4 / 6)
    assert values["f1_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert "acc_top2" in values and "auroc_macro" not in values


def test_top_k_is_skipped_when_meaningless_and_ranking_is_added() -> None:
    assert "acc_top3" not in classification_metrics(3, top_k=3)
    assert "acc_top1" not in classification_metrics(10, top_k=1)
    ranking = classification_metrics(3, top_k=None, ranking=True)
    assert {"auroc_macro", "ap_macro"} <= set(ranking)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    values = ranking(probs, torch.tensor([0, 1, 2, 0]))
    assert values["auroc_macro"].item() == pytest.approx(1.0) and values["ap_macro"].item() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="task.top_k"):
        classification_metrics(3, top_k=0)


def test_complexity_of_a_linear_layer() -> None:
    layer = torch.nn.Linear(10, 5)
    layer.train()
    assert model_complexity(layer, (10,)) == {"params": 55, "trainable_params": 55, "flops": 100, "macs": 50}
    assert layer.training
    layer.bias.requires_grad_(False)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    # conv: 8*8 positions x 4 outputs x 9 weights MACs; linear: 256 x 10
    assert model_complexity(conv, (1, 8, 8))["macs"] == 8 * 8 * 4 * 9 + 256 * 10
    assert model_complexity(layer, (10,))["trainable_params"] == 50
