"""Semi-supervised mechanics: the labeled split, confidence masks and pseudo-labels, consistency, ramps, the EMA
teacher's schedule, the labeled/unlabeled datamodule and the seeded kornia augmentations (known values, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from labline.core.errors import ConfigError
from labline.data.kornia_augment import Kornia
from labline.data.pipeline import ProcessedData
from labline.data.semi import PART, UNLABELED, CycleShuffle, SemiSupervisedDataModule, labeled_split, labeled_tags, with_labels
from labline.losses.semi import confidence_mask, consistency_mse, pseudo_label_loss, ramp_weight
from labline.losses.torch_loss import TorchLoss
from labline.models.ema_teacher import cosine_momentum, ema_update, frozen_copy, warmup_momentum
from labline.models.semi_supervised import FixMatchTask, MeanTeacherTask
from labline.models.task import TaskContext


def _data(n_per_class: int = 20, classes: int = 3) -> ProcessedData:
    y = np.tile(np.arange(classes), n_per_class)
    x = np.random.default_rng(0).normal(size=(len(y), 1, 4, 4)).astype(np.float32)
    idx = np.arange(len(y))
    parts = {"train": idx[: len(y) // 2], "val": idx[len(y) // 2: 3 * len(y) // 4], "test": idx[3 * len(y) // 4:]}
    return ProcessedData(x, y, [str(c) for c in range(classes)], parts, "fp", "md5")


def test_labels_per_class_are_seeded_stratified_and_nested() -> None:
    data = _data()
    train = data.parts["train"]
    labeled, unlabeled = labeled_split(data.y, train, labels_per_class=2, seed=0)
    assert np.bincount(data.y[labeled]).tolist() == [2, 2, 2]
    assert set(labeled) | set(unlabeled) == set(train) and not set(labeled) & set(unlabeled)
    assert np.array_equal(labeled, labeled_split(data.y, train, labels_per_class=2, seed=0)[0])
    assert not np.array_equal(labeled, labeled_split(data.y, train, labels_per_class=2, seed=1)[0])
    # more labels with the same seed keep the fewer ones
    assert set(labeled) <= set(labeled_split(data.y, train, labels_per_class=4, seed=0)[0])
    by_fraction, _ = labeled_split(data.y, train, labeled_fraction=0.5, seed=0)
    assert np.bincount(data.y[by_fraction]).tolist() == [5, 5, 5]


@pytest.mark.parametrize(("kwargs", "key"), [({}, "data.labels_per_class"),
                                             ({"labels_per_class": 1, "labeled_fraction": 0.1}, "data.labels_per_class"),
                                             ({"labels_per_class": 11}, "data.labels_per_class"),
                                             ({"labels_per_class": 0}, "data.labels_per_class"),
                                             ({"labeled_fraction": 1.5}, "data.labeled_fraction")])
def test_bad_label_settings_are_one_line_errors(kwargs, key: str) -> None:
    data = _data()
    with pytest.raises(ConfigError) as info:
        labeled_split(data.y, data.parts["train"], **kwargs)
    assert str(info.value).startswith(f"{key}:") and "\n" not in str(info.value)


def test_with_labels_adds_the_unlabeled_part_and_its_tags() -> None:
    data = _data()
    cfg = OmegaConf.create({"seed": 0, "data": {"labels_per_class": 2, "labeled_fraction": None}})
    split = with_labels(cfg, data)
    assert len(split.parts["train"]) == 6 and len(split.parts[PART]) == 24
    assert np.array_equal(split.parts["test"], data.parts["test"]) and np.array_equal(split.parts["val"], data.parts["val"])
    tags = labeled_tags(split)
    assert tags["labeled_count"] == "6" and tags["unlabeled_count"] == "24" and len(tags["labels_hash"]) == 16
    other = labeled_tags(with_labels(OmegaConf.merge(cfg, {"seed": 1}), data))
    assert other["labels_hash"] != tags["labels_hash"] and labeled_tags(data) == {}
    untouched = OmegaConf.create({"seed": 0, "data": {"labels_per_class": None, "labeled_fraction": None}})
    assert with_labels(untouched, data) is data


def test_an_own_unlabeled_pool_joins_with_label_minus_one_normalised_like_the_data(compose, tmp_path) -> None:
    from labline.data.pipeline import load_processed
    from labline.data.sources import sklearn_digits

    raw = sklearn_digits()
    np.savez(tmp_path / "pool.npz", x=raw.x[:5])
    cfg = compose("data.labels_per_class=3", f"+data.unlabeled_source={tmp_path / 'pool.npz'}")
    plain = load_processed(cfg, tmp_path)
    data = with_labels(cfg, plain)
    pool = data.parts[PART][-5:]
    assert (data.y[pool] == UNLABELED).all() and len(data.x) == len(plain.x) + 5
    np.testing.assert_allclose(data.x[pool], plain.x[:5], atol=1e-5)  # the same images, the same normalisation
    np.savez(tmp_path / "bad.npz", x=raw.x[:5, :, :4])
    with pytest.raises(ConfigError, match="^data.unlabeled_source: inputs of shape"):
        with_labels(compose(f"+data.unlabeled_source={tmp_path / 'bad.npz'}"), plain)


def test_confidence_mask_and_pseudo_labels_of_a_batch() -> None:
    probs = torch.tensor([[0.96, 0.03, 0.01], [0.50, 0.40, 0.10], [0.02, 0.03, 0.95], [0.10, 0.85, 0.05]])
    mask, labels = confidence_mask(probs, 0.95)
    assert mask.tolist() == [True, False, True, False] and labels.tolist() == [0, 0, 2, 1]
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]))
    loss, _, _ = pseudo_label_loss(logits, probs, 0.95)
    # CE to class 0 for row 0 and class 2 for row 2; the two masked rows count as 0 in the mean over four
    assert loss.item() == pytest.approx((math.log(2) + math.log(1 / 0.8)) / 4, abs=1e-6)


def test_consistency_and_ramps_known_values() -> None:
    student, teacher = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.9, 0.1]]))
    assert consistency_mse(student, teacher).item() == pytest.approx(0.4**2 * 2)
    assert consistency_mse(teacher, teacher).item() == pytest.approx(0.0)
    assert ramp_weight(3, warmup=5, rampup=10) == 0.0
    assert ramp_weight(10, warmup=5, rampup=10) == pytest.approx(0.5)
    assert ramp_weight(20, warmup=5, rampup=10) == 1.0 and ramp_weight(0, 0, 0) == 1.0
    assert ramp_weight(5, warmup=0, rampup=10, kind="sigmoid") == pytest.approx(math.exp(-5 * 0.25))
    with pytest.raises(ConfigError, match="^task.ramp"):
        ramp_weight(1, 0, 1, kind="cubic")


def test_ema_teacher_schedule_and_update() -> None:
    assert [warmup_momentum(s, 0.99) for s in (0, 1, 3, 1000)] == pytest.approx([0.0, 0.5, 0.75, 0.99])
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    student = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    teacher = frozen_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.fill_(1.0)
        for p in teacher.parameters():
            p.fill_(0.0)
        student[1].running_mean.fill_(2.0)
    ema_update(teacher, student, 0.9)
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in teacher.parameters())
    assert torch.allclose(teacher[1].running_mean, torch.full((2,), 0.2))
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters(), strict=True))


def test_cycle_shuffle_depends_on_seed_and_epoch_only() -> None:
    sampler = CycleShuffle(5, 12, seed=3)
    first = list(sampler)
    assert len(first) == 12 and sorted(first[:5]) == list(range(5)) and sorted(first[5:10]) == list(range(5))
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and second != first


def _semi_module(**kwargs) -> SemiSupervisedDataModule:
    data = with_labels(OmegaConf.create({"seed": 0, "data": {"labels_per_class": 2, "labeled_fraction": None}}), _data())
    noise = Kornia(nn.Identity(), seed=0)
    return SemiSupervisedDataModule(data, batch_size=4, augment=noise, unlabeled_ratio=3, **kwargs)


def test_datamodule_serves_labeled_and_unlabeled_batches_in_the_ratio() -> None:
    from labline.data.augment import GaussianNoise

    module = _semi_module(unlabeled_views=["weak", "strong"], strong=GaussianNoise(1.0, seed=1))
    loader = module.train_dataloader()
    batches = list(iter(loader))
    # 6 labeled (batches of 4), 24 unlabeled (batches of 12): max(2, 2) = 2 steps
    assert len(batches) == 2
    batch = batches[0][0] if isinstance(batches[0], tuple) else batches[0]
    assert len(batch["labeled"][0]) == 4 and len(batch["unlabeled"][0]) == 12
    module.trainer = type("Training", (), {"training": True})()
    served = module.on_after_batch_transfer(batch, 0)
    (weak, strong), _ = served["unlabeled"]
    assert weak.shape == strong.shape == (12, 1, 4, 4) and not torch.equal(weak, strong)
    with pytest.raises(ConfigError, match="^task.datamodule.strong"):
        _semi_module(unlabeled_views=["weak", "strong"])
    with pytest.raises(ConfigError, match="^data.labels_per_class: this task learns from unlabeled data"):
        SemiSupervisedDataModule(_data(), batch_size=4)


def test_kornia_augmentations_are_seeded_and_leave_the_global_rng_alone() -> None:
    import kornia.augmentation as K

    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    make = lambda: Kornia(K.RandomErasing(scale=(0.1, 0.3), value=0.0, p=1.0), seed=5)  # noqa: E731
    first, second = make(), make()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = first(x)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a, second(x)) and not torch.equal(a, x) and ((a == 0) | (a == x)).all()
    # an epoch's draws depend on (seed, epoch) only: a resumed augmentation draws what the first one drew
    first.set_epoch(3)
    epoch3 = first(x)
    fresh = make()
    fresh.set_epoch(3)
    assert torch.equal(fresh(x), epoch3) and not torch.equal(epoch3, a)
    with pytest.raises(ConfigError, match="^augment.transform"):
        Kornia("not a module")


def _task(kind, **options):
    context = TaskContext.of_parts((1, 2, 2), 3, backbone=nn.Flatten(), head=nn.Linear(4, 3),
                                   loss=TorchLoss("torch.nn.CrossEntropyLoss"), optimizer=torch.optim.SGD)
    return kind(context, **options)


def test_fixmatch_trains_the_strong_view_on_the_weak_views_pseudo_labels() -> None:
    task = _task(FixMatchTask, threshold=0.5)
    generator = torch.Generator().manual_seed(0)
    x, weak, strong = (torch.randn(n, 1, 2, 2, generator=generator) for n in (2, 6, 6))
    logits, loss, mask, pseudo = task.unlabeled_terms(x, [weak, strong])
    with torch.no_grad():
        weak_probs = task.student(weak).softmax(1)
    expected_mask = weak_probs.max(1).values >= 0.5
    assert logits.shape == (2, 3) and torch.equal(mask, expected_mask) and torch.equal(pseudo, weak_probs.argmax(1))
    ce = nn.functional.cross_entropy(task.student(strong), weak_probs.argmax(1), reduction="none")
    assert loss.item() == pytest.approx((ce * expected_mask).mean().item(), abs=1e-6)


def test_mean_teacher_evaluates_the_teacher_and_follows_the_student() -> None:
    task = _task(MeanTeacherTask, ema_momentum=0.5)
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(task(x), task.student(x))  # the teacher starts as a copy
    with torch.no_grad():
        task.head.weight.add_(1.0)
    assert not torch.allclose(task(x), task.student(x))
    task.on_train_batch_end(None, None, 0)  # global step 0: momentum min(1 - 1/1, 0.5) = 0, a plain copy
    assert torch.allclose(task(x), task.student(x))
