"""Contrastive mechanics: NT-Xent / SupCon / triplet values, hard-negative mining, two views, probes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.data.augment import GaussianNoise
from labline.data.pipeline import ProcessedData
from labline.data.views import TwoViewDataModule
from labline.losses.contrastive import NTXentLoss, SupConLoss, TripletLoss, hardest_negatives, hardest_positives
from labline.losses.torch_loss import TorchLoss
from labline.models.contrastive import ContrastiveTask, knn_predict, linear_probe
from labline.models.task import TaskContext

E = torch.eye(2)


def test_nt_xent_known_small_cases() -> None:
    # One sample: its other view is the only candidate, so it is always found.
    assert NTXentLoss(0.5)(E[:1], E[:1]).item() == pytest.approx(0.0, abs=1e-6)
    # Two orthogonal samples, identical views: the positive has cosine 1, the two negatives 0.
    assert NTXentLoss(1.0)(E, E).item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)
    assert NTXentLoss(0.5)(E, E).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-6)


def test_supcon_known_cases() -> None:
    z1, z2 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.randn(6, 4)
    distinct = torch.arange(6)
    # With a label per sample the only positive is the other view: SupCon is NT-Xent.
    assert SupConLoss(0.3)(z1, z2, distinct).item() == pytest.approx(NTXentLoss(0.3)(z1, z2).item(), abs=1e-5)
    # Two samples of one class, all embeddings equal: each anchor has 3 positives of probability 1/3.
    same = torch.ones(2, 3)
    assert SupConLoss(0.1)(same, same, torch.zeros(2, dtype=torch.long)).item() == pytest.approx(math.log(3), abs=1e-5)


@pytest.mark.parametrize("loss", [NTXentLoss(0.5), SupConLoss(0.1), TripletLoss(0.2)], ids=["nt_xent", "supcon", "triplet"])
def test_loss_is_lower_for_aligned_than_for_shuffled_views(loss: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    z1 = torch.randn(32, 16, generator=generator)
    z2 = z1 + 0.1 * torch.randn(32, 16, generator=generator)
    labels = torch.arange(32)
    shuffled = z2[torch.randperm(32, generator=generator)]
    assert loss(z1, z2, labels).item() < loss(z1, shuffled, labels).item()


def test_hard_negative_mining_picks_the_closest_negative() -> None:
    distances = torch.tensor([[0.0, 0.9, 0.5, 0.3],
                              [0.9, 0.0, 0.2, 0.8],
                              [0.5, 0.2, 0.0, 0.1],
                              [0.3, 0.8, 0.1, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert hardest_negatives(distances, labels).tolist() == [3, 2, 1, 0]
    assert hardest_positives(distances, labels).tolist() == [1, 0, 3, 2]
    # A class alone in the batch has no positive; a batch of one class has no negatives.
    assert hardest_positives(distances[:3, :3], labels[:3]).tolist() == [1, 0, -1]
    assert hardest_negatives(distances[:2, :2], labels[:2]).tolist() == [-1, -1]


def test_triplet_known_value() -> None:
    """Orthogonal classes: d(a, p) = 0, d(a, n) = sqrt(2), so the loss is relu(margin - sqrt(2))."""
    labels = torch.tensor([0, 1])
    assert TripletLoss(0.2)(E, E, labels).item() == pytest.approx(0.0)
    assert TripletLoss(2.0)(E, E, labels).item() == pytest.approx(2 - math.sqrt(2), abs=1e-5)


@pytest.mark.parametrize(
    ("make", "key"),
    [(lambda: NTXentLoss(0.0), "loss.temperature"), (lambda: SupConLoss(-0.1), "loss.temperature"),
     (lambda: TripletLoss(-1.0), "loss.margin")],
)
def test_bad_loss_settings_are_one_line_config_errors(make, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value).startswith(f"{key}:") and "\n" not in str(info.value)


def test_probes_on_separable_features() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = 5 * torch.eye(3, 8)
    y = torch.arange(60) % 3
    features = centres[y] + torch.randn(60, 8, generator=generator)
    probs = linear_probe(features[:40].numpy(), y[:40].numpy(), features[40:].numpy(), num_classes=3)
    assert probs.shape == (20, 3) and (probs.argmax(1) == y[40:].numpy()).all()
    assert (knn_predict(features[:40], y[:40], features[40:], k=5) == y[40:]).all()
    # Ties go to the nearest neighbour's class.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert knn_predict(train, torch.tensor([0, 1]), torch.tensor([[0.4, 1.0]]), k=2).tolist() == [1]


def _processed() -> ProcessedData:
    x = np.random.default_rng(0).normal(size=(30, 1, 4, 4)).astype(np.float32)
    y = np.arange(30) % 3
    parts = {"train": np.arange(18), "val": np.arange(18, 24), "test": np.arange(24, 30)}
    return ProcessedData(x, y, ["a", "b", "c"], parts, "test", "test")


def test_two_views_differ_and_validation_views_are_fixed() -> None:
    data = _processed()
    with pytest.raises(ConfigError, match="^augment:"):
        TwoViewDataModule(data)
    first = TwoViewDataModule(data, batch_size=4, augment=GaussianNoise(0.5, seed=0))
    second = TwoViewDataModule(data, batch_size=4, augment=GaussianNoise(0.5, seed=0))
    v1, v2, y = first.sets["val"].tensors
    assert not torch.equal(v1, v2) and torch.equal(v1, second.sets["val"].tensors[0])
    first.trainer = type("Training", (), {"training": True})()
    x = torch.from_numpy(data.x[:4])
    a, b, labels = first.on_after_batch_transfer((x, torch.zeros(4)), 0)
    assert a.shape == b.shape == x.shape and not torch.equal(a, b)
    fit, evaluate = first.test_dataloader()
    assert len(fit.dataset) == 18 and len(evaluate.dataset) == 6


def test_contrastive_task_refuses_a_classification_loss() -> None:
    with pytest.raises(ConfigError, match="^loss: task=contrastive needs a contrastive loss"):
        ContrastiveTask(TaskContext.of_parts((1, 4, 4), 3, backbone=nn.Flatten(), head=nn.Linear(16, 4),
                                             loss=TorchLoss("torch.nn.CrossEntropyLoss"), optimizer=torch.optim.SGD))
