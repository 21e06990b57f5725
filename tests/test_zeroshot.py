"""Zero-shot mechanics: seen/unseen split, class descriptions, DAP and compatibility scores, ZSL/GZSL metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.data.pipeline import ProcessedData
from labline.data.shapes import class_attributes, shapes
from labline.data.zeroshot import ZeroShotDataModule, choose_unseen, read_class_attributes
from labline.losses.torch_loss import TorchLoss
from labline.models.task import TaskContext
from labline.models.zeroshot import ZeroShotTask, dap_scores, harmonic_mean, zero_shot_metrics

CLASSES = shapes(per_class=1, image_size=12).classes
NAMES, DESCRIPTIONS = class_attributes(CLASSES)


def _processed(per_class: int = 10) -> ProcessedData:
    ds = shapes(per_class=per_class, image_size=12)
    order = np.random.default_rng(0).permutation(len(ds.y))
    parts = dict(zip(("train", "val", "test"), np.split(order, [len(order) // 2, 3 * len(order) // 4]), strict=True))
    return ProcessedData(ds.x, ds.y, ds.classes, parts, "test", "test")


def test_harmonic_mean_of_fixed_numbers() -> None:
    assert harmonic_mean(0.6, 0.4) == pytest.approx(0.48)
    assert harmonic_mean(0.9, 0.0) == 0.0 and harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)


def test_zsl_and_gzsl_metrics_on_known_scores() -> None:
    """Classes 0, 1 seen, 2, 3 unseen; the GZSL scores favour seen classes, as trained models do."""
    unseen = torch.tensor([False, False, True, True])
    targets = torch.tensor([0, 1, 2, 2, 3, 3])
    scores = torch.tensor([[9., 0, 0, 0],   # seen 0 -> 0 right
                           [9., 1, 0, 0],   # seen 1 -> 0 wrong
                           [5., 0, 3, 1],   # unseen 2: GZSL picks seen 0, ZSL picks 2
                           [0., 0, 3, 1],   # unseen 2 -> 2 right
                           [0., 0, 3, 1],   # unseen 3: ZSL picks 2, wrong
                           [0., 0, 1, 3]])  # unseen 3 -> 3 right
    metrics, per_class = zero_shot_metrics(scores, targets, unseen)
    assert metrics["acc"] == pytest.approx((1.0 + 0.5) / 2)
    assert metrics["gzsl_seen"] == pytest.approx(0.5) and metrics["gzsl_unseen"] == pytest.approx(0.5)
    assert metrics["gzsl_h"] == pytest.approx(0.5)
    assert per_class["zsl"] == {2: 1.0, 3: 0.5} and per_class["gzsl"][2] == 0.5


def test_dap_picks_the_class_whose_attributes_match() -> None:
    descriptions = torch.tensor([[1., 0, 1, 0], [0, 1, 1, 0], [0, 1, 0, 1]])
    prior = torch.full((4,), 0.5)
    for target in range(3):
        logits = 4.0 * (2 * descriptions[target] - 1)  # confident in exactly this class's attributes
        assert dap_scores(logits[None], descriptions, prior).argmax(1).item() == target
    # One attribute uncertain (p = 0.5): the decision rests on the attributes that are certain.
    logits = torch.tensor([[0.0, 4.0, -4.0, 4.0]])
    assert dap_scores(logits, descriptions, prior).argmax(1).item() == 2


def test_drawn_unseen_classes_are_seeded_and_leave_every_attribute_value_seen() -> None:
    first = choose_unseen(CLASSES, DESCRIPTIONS, 6, None, seed=0)
    assert np.array_equal(first, choose_unseen(CLASSES, DESCRIPTIONS, 6, None, seed=0))
    assert not np.array_equal(first, choose_unseen(CLASSES, DESCRIPTIONS, 6, None, seed=1))
    seen = np.setdiff1d(np.arange(len(CLASSES)), first)
    assert len(first) == 6 and (DESCRIPTIONS[seen].max(0) == 1).all()


def test_named_unseen_classes() -> None:
    idx = choose_unseen(CLASSES, DESCRIPTIONS, 6, ["cross|small|outline", "circle|large|filled"], seed=0)
    assert [CLASSES[i] for i in idx] == ["circle|large|filled", "cross|small|outline"]


@pytest.mark.parametrize(
    ("count", "names", "needle"),
    [(6, ["circle|huge|filled"], "unknown classes ['circle|huge|filled']"),
     (6, CLASSES, "zero-shot needs both seen and unseen classes"),
     (24, None, "cannot be unseen"),
     (0, None, "cannot be unseen"),
     (6, [c for c in CLASSES if c.startswith("cross")], "occurs only in unseen classes")],
)
def test_bad_unseen_settings_are_one_line_config_errors(count: int, names: list[str] | None, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        choose_unseen(CLASSES, DESCRIPTIONS, count, names, seed=0)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("task.datamodule.unseen_")


def test_zero_shot_training_never_sees_an_unseen_class_image() -> None:
    data = _processed()
    dm = ZeroShotDataModule(data, batch_size=16, unseen_count=6)
    unseen = dm.zero_shot.unseen
    for part in ("train", "val"):
        labels = torch.cat([y for _, y in dm._loader(part, shuffle=False)]).numpy()
        assert len(labels) and not np.isin(labels, unseen).any()
    tested = torch.cat([y for _, y in dm.test_dataloader()]).numpy()
    assert np.isin(tested, unseen).any() and np.array_equal(np.sort(tested), np.sort(data.y[data.parts["test"]]))
    assert dm.num_classes == len(dm.zero_shot.attributes) == 9


def test_user_yaml_descriptions(tmp_path) -> None:
    path = tmp_path / "attributes.yaml"
    path.write_text("cat: [1, 0, 1]\ndog: [1, 1, 0]\nfish: [0, 0, 1]\n")
    names, matrix = read_class_attributes(str(path), ["dog", "cat", "fish"])
    assert names == ["attribute0", "attribute1", "attribute2"]
    assert matrix.tolist() == [[1, 1, 0], [1, 0, 1], [0, 0, 1]]
    with pytest.raises(ConfigError, match=r"no vector for classes \['bird'\]"):
        read_class_attributes(str(path), ["cat", "bird"])
    path.write_text("cat: [1, 0]\ndog: [1]\n")
    with pytest.raises(ConfigError, match="one length"):
        read_class_attributes(str(path), ["cat", "dog"])
    with pytest.raises(ConfigError, match="file not found"):
        read_class_attributes(str(tmp_path / "missing.yaml"), ["cat"])


def _task(**kwargs) -> ZeroShotTask:
    loss = kwargs.pop("loss", TorchLoss("torch.nn.CrossEntropyLoss"))
    context = TaskContext.of_parts((1, 2, 2), 9, backbone=nn.Flatten(), head=nn.Linear(4, 9), loss=loss,
                                   optimizer=torch.optim.SGD)
    return ZeroShotTask(context, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"temperature": 0.0}, "task.temperature"), ({"temperature": -1.0}, "task.temperature"),
     ({"method": "clip"}, "task.method"), ({"method": "dap"}, "loss")],
)
def test_bad_task_settings_are_one_line_config_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _task(**kwargs)
    assert str(info.value).startswith(f"{key}:") and "\n" not in str(info.value)


def test_dap_accepts_an_attribute_loss() -> None:
    assert _task(method="dap", loss=TorchLoss("torch.nn.BCEWithLogitsLoss", target="multihot")).method == "dap"
