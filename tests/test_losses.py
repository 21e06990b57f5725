"""Every loss option, built from the composed config, on the shapes it accepts; known values from CONCEPTS.md.

Each option is composed once (a compose costs about a second on a busy machine) and
its knobs are then set on a copy of the composed node, as an override would set them.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from labline.core.config import compose_config
from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.losses import labels
from testroot import CONF

OPTIONS = ["cross_entropy", "label_smoothing", "focal", "dice", "bce", "l1", "mse", "huber", "kl_div"]


@functools.cache
def _option(name: str) -> DictConfig:
    return compose_config([f"loss={name}"], conf=CONF).loss


def _loss(name: str, **knobs: Any) -> torch.nn.Module:
    node = OmegaConf.create(OmegaConf.to_container(_option(name)))
    for key, value in knobs.items():
        assert key in node, f"loss={name} has no knob {key}"
        node[key] = value
    return instantiate(node, "loss")


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_scores_class_logits_and_backpropagates(option: str) -> None:
    loss_fn = _loss(option)
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    value = loss_fn(logits, labels.encode(y, getattr(loss_fn, "target", "index"), 4))
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    value.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    focal = _loss("focal", gamma=0)
    assert torch.allclose(focal(logits, y), F.cross_entropy(logits, y), atol=1e-6)
    assert _loss("focal")(logits, y) < F.cross_entropy(logits, y)


def test_focal_alpha_weighs_classes_and_ignores_index() -> None:
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 255])
    plain = F.cross_entropy(logits[:3], y[:3], reduction="none")
    weighted = _loss("focal", gamma=0, alpha=[1.0, 2.0, 0.0], ignore_index=255)(logits, y)
    assert torch.allclose(weighted, (plain * torch.tensor([1.0, 2.0, 0.0])).mean(), atol=1e-6)


def test_negative_gamma_through_an_override_is_a_one_line_config_error(compose) -> None:
    with pytest.raises(ConfigError) as err:
        instantiate(compose("loss=focal", "loss.gamma=-1").loss, "loss")
    assert err.value.key == "loss.gamma" and "\n" not in str(err.value)


@pytest.mark.parametrize(("knob", "value"), [("gamma", -0.5), ("alpha", 0.25), ("alpha", [1.0, -1.0])])
def test_bad_focal_values_are_config_errors(knob: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        _loss("focal", **{knob: value})
    assert err.value.key == f"loss.{knob}"


def test_label_smoothing_loss_is_cross_entropy_on_smoothed_targets() -> None:
    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    value = _loss("label_smoothing", smoothing=0.1)(logits, y)
    expected = -(labels.smooth(y, 3, 0.1) * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(value, expected)
    assert torch.allclose(_loss("label_smoothing", smoothing=0)(logits, y), F.cross_entropy(logits, y))
    # not torch's convention: eps/K on every class
    assert not torch.allclose(value, F.cross_entropy(logits, y, label_smoothing=0.1))


@pytest.mark.parametrize("smoothing", [1.0, -0.1, 1.5])
def test_smoothing_outside_unit_interval_is_a_config_error(smoothing: float) -> None:
    with pytest.raises(ConfigError, match=r"loss.smoothing: must be in \[0, 1\)"):
        _loss("label_smoothing", smoothing=smoothing)


def test_cross_entropy_takes_class_weights_and_ignore_index() -> None:
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    loss_fn = _loss("cross_entropy", weight=[1.0, 3.0, 0.5], ignore_index=2)
    expected = F.cross_entropy(logits, y, weight=torch.tensor([1.0, 3.0, 0.5]), ignore_index=2)
    assert torch.allclose(loss_fn(logits, y), expected)


def test_unknown_torch_criterion_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="loss.criterion"):
        _loss("mse", criterion="torch.nn.NoSuchLoss")


def test_kl_of_identical_distributions_is_zero_and_positive_otherwise() -> None:
    kl = _loss("kl_div")
    logits = torch.randn(3, 4)
    assert kl(logits, logits.softmax(1)).abs() < 1e-6
    target = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 3)
    expected = (target * (target.log() - logits.log_softmax(1))).sum(1).mean()
    assert torch.allclose(kl(logits, target), expected, atol=1e-6)


def test_dice_multiclass_masks_and_binary_masks() -> None:
    dice = _loss("dice", smooth=0)
    torch.manual_seed(0)
    masks = torch.randint(0, 3, (2, 5, 5))
    perfect = F.one_hot(masks, 3).movedim(-1, 1).float() * 50.0
    assert dice(perfect, masks) < 1e-4
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    dice(logits, masks).backward()
    assert logits.grad.abs().sum() > 0
    binary = torch.randint(0, 2, (2, 5, 5))
    assert dice((binary.float() * 2 - 1).unsqueeze(1) * 50.0, binary) < 1e-4
    assert _loss("dice")(torch.zeros(2, 1, 5, 5), binary) > 0.2


def test_regression_losses_compare_with_onehot_rows() -> None:
    y = torch.tensor([1, 0])
    onehot = labels.encode(y, "onehot", 2)
    assert _loss("mse")(onehot, onehot) == 0
    assert torch.allclose(_loss("l1")(torch.zeros(2, 2), onehot), torch.tensor(0.5))
    # error 1 > delta 0.5: linear part delta * (|e| - delta / 2) = 0.375 on half of the entries
    assert torch.allclose(_loss("huber", delta=0.5)(torch.zeros(2, 2), onehot), torch.tensor(0.1875))
