"""Segmentation: mask metrics and losses against values computed by hand, the generated scenes and their trip
through the data stages, the dense backbones and the task's checks."""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.data import files
from labline.data.pipeline import load_processed, stage_prepare, stage_preprocess, stage_split
from labline.data.scenes import scenes
from labline.losses.dice import DiceLoss
from labline.losses.weighted import WeightedSum
from labline.metrics.masks import class_dice, class_iou, dice_score, label_confusion, mask_iou, mask_scores, mean_iou
from labline.models.backbones.cnn import CNN
from labline.models.backbones.fcn import FCN
from labline.models.backbones.resnet import ResNet
from labline.models.backbones.unet import UNet
from labline.models.heads.linear import LinearHead
from labline.models.heads.pixel import PixelHead
from labline.models.parts import build_backbone
from labline.models.segmentation import SegmentationTask
from labline.models.task import TaskContext, build_task
from testroot import CONF

SMALL = ["experiment=segmentation_scenes", "data.source.n=60"]


def _box(x1: int, y1: int, x2: int, y2: int, size: int = 8) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[y1:y2, x1:x2] = 1
    return mask


def test_iou_and_dice_of_the_concepts_boxes_as_masks() -> None:
    """CONCEPTS.md's boxes (2,2)-(5,5) and (3,3)-(6,6) as pixel masks: 9 pixels each, 4 shared, 14 in the union."""
    a, b = _box(2, 2, 5, 5), _box(3, 3, 6, 6)
    assert mask_iou(a, b).item() == pytest.approx(4 / 14)
    assert dice_score(a, b).item() == pytest.approx(8 / 18, abs=1e-6)
    confusion = label_confusion(a, b, 2)
    assert confusion.tolist() == [[50, 5], [5, 4]]  # rows: b's classes, columns: a's
    assert class_iou(confusion)[1].item() == pytest.approx(4 / 14)
    assert class_dice(confusion)[1].item() == pytest.approx(8 / 18)
    assert class_iou(confusion)[0].item() == pytest.approx(50 / 60)


def test_mean_iou_ignores_classes_absent_from_both_maps() -> None:
    target, pred = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    # IoU_0 = 1/2, IoU_1 = 2/3; classes 2 and 3 appear nowhere and are not averaged in (as 0 or 1)
    assert mean_iou(pred, target, num_classes=4).item() == pytest.approx((1 / 2 + 2 / 3) / 2)
    iou = class_iou(label_confusion(pred, target, 4))
    assert iou[2:].isnan().all()
    scores = mask_scores(label_confusion(pred, target, 4), ["bg", "a", "b", "c"])
    assert scores["miou"].item() == pytest.approx(7 / 12)
    assert scores["pixel_acc"].item() == pytest.approx(3 / 4)
    assert scores["dice"].item() == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert set(scores) == {"pixel_acc", "miou", "dice", "iou_bg", "iou_a"}
    # a class predicted but absent from the target counts, with IoU 0
    assert mean_iou(torch.tensor([0, 0, 2, 1]), target, 4).item() == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_dice_loss_of_a_perfect_and_an_empty_prediction() -> None:
    target = _box(2, 2, 5, 5).unsqueeze(0)
    sure = (target.float() * 2 - 1).unsqueeze(1) * 50.0  # one binary channel, logits +-50
    assert DiceLoss(smooth=0)(sure, target).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.full_like(sure, -50.0)  # predicts no foreground at all
    assert DiceLoss(smooth=0)(empty, target).item() == pytest.approx(1.0, abs=1e-6)
    # multi-class, all background predicted on a 9/64 foreground mask: Dice_bg = 2*55/(64+55), Dice_fg = 0
    logits = torch.stack([torch.full((8, 8), 50.0), torch.full((8, 8), -50.0)]).unsqueeze(0)
    assert DiceLoss(smooth=0)(logits, target).item() == pytest.approx(1 - (110 / 119) / 2, abs=1e-5)


def test_weighted_sum_adds_its_terms_and_checks_its_weights() -> None:
    loss = instantiate(OmegaConf.load(CONF / "loss" / "ce_dice.yaml"), "loss")
    assert isinstance(loss, WeightedSum) and loss.target == "index"
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    expected = torch.nn.functional.cross_entropy(logits, target) + DiceLoss(1.0)(logits, target)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="loss.weights"):
        WeightedSum({"dice": DiceLoss()}, {"dice": -1.0})
    with pytest.raises(ConfigError, match="each term once"):
        WeightedSum({"dice": DiceLoss()}, {"ce": 1.0})


def test_scenes_are_seeded_and_masks_mark_the_objects() -> None:
    a, b = scenes(n=20, seed=3), scenes(n=20, seed=3)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, scenes(n=20, seed=4).x)
    assert a.x.shape == (20, 1, 32, 32) and a.y.shape == (20, 32, 32) and a.y.dtype == np.int64
    assert a.classes == ["background", "circle", "square", "triangle", "cross"]
    assert set(np.unique(a.y)) == set(range(5))
    clean = scenes(n=50, noise=0.0, image_size=64)
    assert clean.x.shape == (50, 1, 64, 64)
    # without noise, objects (intensity >= 0.6) are exactly the non-background pixels (background <= 0.56)
    assert np.array_equal(clean.x[:, 0] >= 0.6, clean.y > 0)
    counts = (scenes(n=200, objects=[2, 2], shapes=["square"]).y > 0).reshape(200, -1).sum(1)
    assert counts.min() > 0
    with pytest.raises(ConfigError, match="data.source.objects"):
        scenes(objects=[3, 1])
    with pytest.raises(ConfigError, match="data.source.shapes"):
        scenes(shapes=["hexagon"])


def test_masks_go_through_the_stages_with_their_images_unnormalised(tmp_path, compose) -> None:
    cfg = compose(*SMALL)
    raw = stage_prepare(cfg, tmp_path)
    stage_split(cfg, tmp_path)
    stage_preprocess(cfg, tmp_path)
    source = files.read_raw(raw)
    data = load_processed(cfg, tmp_path)
    assert np.array_equal(data.y, source.y), "masks reach training as generated: split by index, never normalised"
    assert data.y.shape == (60, 32, 32) and data.classes == source.classes
    train = data.x[data.parts["train"]]
    assert abs(train.mean()) < 1e-5, "the images are z-scored on the train part"
    assert sorted(np.concatenate(list(data.parts.values())).tolist()) == list(range(60))
    with pytest.raises(ConfigError, match="cannot stratify"):
        load_processed(compose(*SMALL, "split.stratify=true"), tmp_path / "other")


@pytest.mark.parametrize("size", [32, 64, 33])
def test_dense_backbones_keep_the_input_size(size: int) -> None:
    x = torch.randn(2, 1, size, size)
    assert UNet([1, size, size], channels=[8, 16, 32])(x).shape == (2, 8, size, size)
    fcn = FCN([1, size, size], partial(CNN, channels=[8, 16]), width=12)
    assert fcn(x).shape == (2, 12, size, size)
    assert FCN([1, size, size], partial(ResNet, depths=[1, 1], widths=[8, 16]), width=4)(x).shape == (2, 4, size, size)


def _context(backbone: torch.nn.Module, head: torch.nn.Module, loss: torch.nn.Module | None = None) -> TaskContext:
    return TaskContext.of_parts((1, 16, 16), 3, backbone=backbone, head=head, loss=loss or torch.nn.CrossEntropyLoss(),
                                optimizer=partial(torch.optim.Adam, lr=1e-3))


def test_task_predicts_masks_and_rejects_parts_that_do_not() -> None:
    task = SegmentationTask(_context(UNet([1, 16, 16], channels=[4, 8]), PixelHead(4, 3)))
    assert task(torch.zeros(2, 1, 16, 16)).shape == (2, 3, 16, 16)
    with pytest.raises(ConfigError, match="dense map"):
        SegmentationTask(_context(CNN([1, 16, 16], channels=[4]), LinearHead(4, 3)))
    with pytest.raises(ConfigError, match="head"):
        SegmentationTask(_context(UNet([1, 16, 16], channels=[4, 8]), LinearHead(4, 3)))
    with pytest.raises(ConfigError, match="backbone.encoder"):
        FCN([1, 16, 16], partial(torch.nn.Identity))


def test_segmentation_composes_with_the_config_and_reports_a_pooling_backbone(compose) -> None:
    from labline.models.task import build_task

    for backbone in ("unet", "fcn"):
        cfg = compose(*SMALL, f"backbone={backbone}")
        task = build_task(TaskContext(cfg, (1, 32, 32), 5, ["background", "circle", "square", "triangle", "cross"]))
        assert task(torch.zeros(1, 1, 32, 32)).shape == (1, 5, 32, 32)
    with pytest.raises(ConfigError, match="unet, fcn"):
        build_task(TaskContext(compose(*SMALL, "backbone=cnn"), (1, 32, 32), 5))


# ---- an FCN starting from a classifier's backbone (backbone.weights) ----

TINY_CNN = [4, 8, 16]


def _classifier_checkpoint(compose, tmp_path, channels: list[int]) -> tuple[torch.nn.Module, str]:
    """A digits CNN classifier (1x8x8 inputs, labline's classification task) after one training step, and its
    Lightning checkpoint: weights and batch-norm statistics that no initialisation reproduces."""
    task = build_task(TaskContext(compose("backbone=cnn", f"backbone.channels={channels}"), (1, 8, 8), 10))
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu")
    trainer.fit(task, train_dataloaders=DataLoader(data, batch_size=16))
    path = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(path)
    return task.backbone, str(path)


def _fcn(compose, *overrides: str) -> FCN:
    node = compose("experiment=segmentation_scenes_fcn", f"backbone.encoder.channels={TINY_CNN}", *overrides).backbone
    fcn, _ = build_backbone(node, [1, 32, 32])
    return fcn


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_fcn_encoder_starts_from_a_digits_classifiers_backbone(compose, tmp_path) -> None:
    classifier, path = _classifier_checkpoint(compose, tmp_path, TINY_CNN)
    # the classifier's keys are net.0.* (its conv stack, then pool and dropout without weights); the FCN's encoder.0.*
    expected = {k.removeprefix("net."): v for k, v in _state(classifier).items()}
    assert not all(torch.equal(v, _state(_fcn(compose).encoder)[k]) for k, v in expected.items())
    fcn = _fcn(compose, f"backbone.weights={path}")
    loaded = _state(fcn.encoder)
    assert loaded.keys() == expected.keys() and any("running_mean" in k for k in loaded)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    # the mixing conv is the FCN's own, freshly initialised: it trains on masks from there
    assert fcn(torch.randn(2, 1, 32, 32)).shape == (2, 64, 32, 32)


def test_fcn_checkpoint_loads_whole(compose, tmp_path) -> None:
    torch.manual_seed(1)
    source = _fcn(compose)
    path = tmp_path / "fcn.pt"
    torch.save({f"backbone.{k}": v for k, v in source.state_dict().items()}, path)
    torch.manual_seed(2)
    fresh, loaded = _state(_fcn(compose)), _state(_fcn(compose, f"backbone.weights={path}"))
    assert not torch.equal(fresh["mix.0.weight"], _state(source)["mix.0.weight"])
    assert all(torch.equal(loaded[k], v) for k, v in _state(source).items()) and loaded.keys() == _state(source).keys()


def test_classifier_of_other_channels_or_widths_is_a_one_line_weights_error(compose, tmp_path) -> None:
    rgb = tmp_path / "rgb.pt"
    torch.save({f"backbone.{k}": v for k, v in CNN([3, 8, 8], channels=TINY_CNN).state_dict().items()}, rgb)
    with pytest.raises(ConfigError, match=r"^backbone\.weights: '.*rgb\.pt' was trained on 3-channel inputs, these inputs "
                                          r"have 1 channels \(valid: a checkpoint of a backbone trained on 1-channel") as caught:
        _fcn(compose, f"backbone.weights={rgb}")
    assert "\n" not in str(caught.value)
    _, wider = _classifier_checkpoint(compose, tmp_path, [8, 16, 32])
    with pytest.raises(ConfigError, match=r"^backbone\.weights: .* does not fit this backbone: .*keys of another shape "
                                          r"\(e\.g\. encoder\.0\."):
        _fcn(compose, f"backbone.weights={wider}")
