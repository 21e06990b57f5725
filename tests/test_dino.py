"""DINO mechanics: sharpening and centring on fixed vectors, the loss and its collapse diagnostics, multi-crop shapes,
the EMA teacher (known values, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from labline.core.errors import ConfigError
from labline.data.augment import GaussianNoise, ResizedCrop
from labline.data.multicrop import MultiCropDataModule
from labline.data.pipeline import ProcessedData
from labline.data.semi import PART, with_labels
from labline.losses.dino import DINOLoss, entropy, sharpen
from labline.losses.torch_loss import TorchLoss
from labline.models.dino import DINOTask
from labline.models.heads.projection import ProjectionHead
from labline.models.task import TaskContext

V = torch.tensor([[1.0, 2.0, 3.0]])


def test_sharpening_temperature_on_a_fixed_vector() -> None:
    e = [math.exp(1), math.exp(2), math.exp(3)]
    assert sharpen(V, 0.0, 1.0)[0].tolist() == pytest.approx([v / sum(e) for v in e])
    e2 = [math.exp(2), math.exp(4), math.exp(6)]  # temperature 0.5 doubles the logits
    assert sharpen(V, 0.0, 0.5)[0].tolist() == pytest.approx([v / sum(e2) for v in e2])
    entropies = [entropy(sharpen(V, 0.0, t)).item() for t in (10.0, 1.0, 0.1, 0.01)]
    assert entropies == sorted(entropies, reverse=True) and entropies[0] < math.log(3) and entropies[-1] < 1e-6
    # centring by a constant shift changes nothing; by the vector itself gives the uniform distribution
    assert torch.allclose(sharpen(V, 5.0, 0.3), sharpen(V, 0.0, 0.3))
    assert sharpen(V, V, 0.04)[0].tolist() == pytest.approx([1 / 3] * 3)


def test_centre_update_is_a_running_mean_of_the_teacher_outputs() -> None:
    loss = DINOLoss(out_dim=2, center_momentum=0.9)
    loss.update_center([torch.tensor([[1.0, 3.0], [3.0, 5.0]])])  # batch mean [2, 4]
    assert loss.center[0].tolist() == pytest.approx([0.2, 0.4])
    loss.update_center([torch.tensor([[2.0, 4.0]]), torch.tensor([[2.0, 4.0]])])
    assert loss.center[0].tolist() == pytest.approx([0.9 * 0.2 + 0.1 * 2, 0.9 * 0.4 + 0.1 * 4])
    frozen = DINOLoss(out_dim=2, centering=False)
    frozen.update_center([torch.ones(3, 2)])
    assert frozen.center.abs().sum() == 0


def test_loss_pairs_different_crops_and_reports_collapse() -> None:
    k = 4
    loss = DINOLoss(out_dim=k, student_temp=0.1, teacher_temp=0.04)
    teacher = [torch.randn(5, k), torch.randn(5, k)]
    targets = loss.teacher_probs(teacher, 0)  # before the step's centre update
    # a uniform student: every pair's cross-entropy is log K whatever the teacher says
    value, diag = loss([torch.zeros(5, k)] * 4, teacher)
    assert value.item() == pytest.approx(math.log(k), abs=1e-5)
    assert diag["teacher_entropy"].item() == pytest.approx(np.mean([entropy(p).item() for p in targets]), abs=1e-6)
    assert diag["teacher_student_kl"].item() == pytest.approx(math.log(k) - diag["teacher_entropy"].item(), abs=1e-5)
    # the student equal to a constant teacher: zero KL, the collapse DINO's centring and sharpening prevent
    constant = [torch.tensor([[5.0, 0.0, 0.0, 0.0]]).repeat(3, 1)] * 2
    _, collapsed = DINOLoss(out_dim=k, student_temp=0.04, teacher_temp=0.04, centering=False).eval()(constant, constant)
    assert collapsed["teacher_student_kl"].item() == pytest.approx(0.0, abs=1e-5)
    assert collapsed["teacher_entropy"].item() < 1e-4
    assert loss.centering and loss.center.abs().sum() > 0  # training mode updated the centre
    with pytest.raises(ConfigError, match="^task.datamodule: DINO needs at least two crops"):
        loss([torch.zeros(2, k)], [torch.zeros(2, k)])


def test_no_sharpening_uses_the_student_temperature_and_warm_up_is_linear() -> None:
    assert DINOLoss(student_temp=0.1, teacher_temp=0.04, sharpening=False).teacher_temperature(0) == 0.1
    warm = DINOLoss(teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=10)
    assert [warm.teacher_temperature(e) for e in (0, 5, 10, 20)] == pytest.approx([0.04, 0.055, 0.07, 0.07])
    with pytest.raises(ConfigError, match="^loss.teacher_temp"):
        DINOLoss(teacher_temp=0)


def _data() -> ProcessedData:
    y = np.tile(np.arange(3), 20)
    x = np.random.default_rng(0).normal(size=(60, 1, 8, 8)).astype(np.float32)
    parts = {"train": np.arange(30), "val": np.arange(30, 45), "test": np.arange(45, 60)}
    return ProcessedData(x, y, ["a", "b", "c"], parts, "fp", "md5")


def test_multi_crop_shapes_and_the_probe_part() -> None:
    data = with_labels(OmegaConf.create({"seed": 0, "data": {"labels_per_class": 2, "labeled_fraction": None}}), _data())
    module = MultiCropDataModule(data, batch_size=5, augment=GaussianNoise(0.1, seed=0),
                                 global_crop=ResizedCrop(scale=(0.5, 1.0), seed=1),
                                 local_crop=ResizedCrop(scale=(0.2, 0.5), size=(4, 4), seed=2), local_crops=3)
    globals_, locals_ = module.crops(torch.from_numpy(data.x[:5]))
    assert [tuple(g.shape) for g in globals_] == [(5, 1, 8, 8)] * 2
    assert [tuple(c.shape) for c in locals_] == [(5, 1, 4, 4)] * 3
    assert not torch.equal(globals_[0], globals_[1])
    # trains on labeled and unlabeled inputs; the probes fit on the labeled part only
    assert len(module.sets["train"]) == len(data.parts["train"]) + len(data.parts[PART]) == 30
    fit, scored = module.test_dataloader()
    assert len(fit.dataset) == 6 and len(scored.dataset) == 15
    with pytest.raises(ConfigError, match="^task.datamodule.local_crop"):
        MultiCropDataModule(data, global_crop=ResizedCrop(seed=1), local_crops=2)
    with pytest.raises(ConfigError, match="^task.datamodule.global_crops"):
        MultiCropDataModule(data, global_crop=ResizedCrop(seed=1), global_crops=1, local_crops=0)


def _dino(**options) -> DINOTask:
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    context = TaskContext.of_parts((1, 8, 8), 3, backbone=backbone, head=ProjectionHead(8, hidden=[16], dim=4),
                                   loss=DINOLoss(out_dim=6), optimizer=torch.optim.SGD)
    return DINOTask(context, **options)


def test_dino_task_evaluates_the_teacher_and_without_ema_copies_the_student() -> None:
    task = _dino(teacher_momentum=0.0, final_teacher_momentum=0.0)
    x = torch.randn(4, 1, 8, 8)
    assert task.student(x).shape == (4, 6) and torch.equal(task(x), task.student.features(x))
    with torch.no_grad():
        task.student.backbone[1].weight.add_(1.0)
    assert not torch.allclose(task(x), task.student.features(x))
    task.on_train_batch_end(None, None, 0)
    assert torch.allclose(task(x), task.student.features(x))
    with pytest.raises(ConfigError, match="^loss: task=dino needs the DINO loss"):
        DINOTask(TaskContext.of_parts((1, 8, 8), 3, backbone=nn.Flatten(), head=nn.Identity(),
                                      loss=TorchLoss("torch.nn.CrossEntropyLoss"), optimizer=torch.optim.SGD))
