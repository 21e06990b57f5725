"""Optimizer options built from the real conf/: each one steps, and weight decay skips norms and biases."""

from __future__ import annotations

import io
from functools import cache

import pytest
import torch
from omegaconf import open_dict
from torch import nn

from labline.core.config import compose_config, group_options, hydra_context
from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.models.optimization import configure_optimization
from testroot import CONF

with hydra_context(CONF):
    OPTIMIZERS = group_options("optimizer")


@pytest.fixture(scope="module")
def compose():
    """The conftest ``compose`` with one Hydra initialisation and a cache for the module (~0.3 s per compose saved)."""
    with hydra_context(CONF):
        yield cache(lambda *overrides: compose_config(list(overrides), conf=CONF))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
                         nn.LayerNorm(5), nn.Linear(5, 2, bias=False))


def _optimizer(compose, name: str, model: nn.Module | None = None, **changes: object) -> torch.optim.Optimizer:
    """Option ``name`` as composed from conf/, with ``changes`` to its keys (one compose per option)."""
    node = compose(f"optimizer={name}").optimizer.copy()
    with open_dict(node):
        node.update(changes)
    return configure_optimization(model or _model(), instantiate(node, "optimizer"), None)


def test_the_design_s_optimizers_are_all_options() -> None:
    assert set(OPTIMIZERS) >= {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam"}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps_and_lowers_the_loss(compose, name: str) -> None:
    model = _model()
    opt = _optimizer(compose, name, model=model)
    x, y = torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1] * 8)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert losses[-1] < losses[0]


def test_momentum_and_nesterov_are_what_they_say(compose) -> None:
    momentum, nesterov = _optimizer(compose, "momentum"), _optimizer(compose, "nesterov")
    assert momentum.defaults["momentum"] == 0.9 and not momentum.defaults["nesterov"]
    assert nesterov.defaults["momentum"] == 0.9 and nesterov.defaults["nesterov"]
    assert isinstance(_optimizer(compose, "adamw"), torch.optim.AdamW)


def test_no_decay_group_holds_exactly_norm_weights_and_biases(compose) -> None:
    model = _model()
    opt = _optimizer(compose, "adamw", model=model)
    groups = {g["name"]: g for g in opt.param_groups}
    conv, bn, linear, ln, last = model[0], model[1], model[4], model[5], model[6]
    assert {id(p) for p in groups["decay"]["params"]} == {id(conv.weight), id(linear.weight), id(last.weight)}
    assert {id(p) for p in groups["no_decay"]["params"]} == {id(p) for p in (bn.weight, bn.bias, linear.bias, ln.weight, ln.bias)}
    assert groups["decay"]["weight_decay"] == 0.01 and groups["no_decay"]["weight_decay"] == 0.0


def test_switching_the_exclusion_off_decays_everything(compose) -> None:
    model = _model()
    (group,) = _optimizer(compose, "adamw", model=model, no_decay_norm_bias=False).param_groups
    assert len(group["params"]) == len(list(model.parameters())) and group["weight_decay"] == 0.01


def test_weight_decay_shrinks_only_the_decay_group(compose) -> None:
    """With a zero loss gradient an SGD step is pure decay: p -= lr * wd * p on weights, nothing on norms/biases."""
    model = _model()
    opt = _optimizer(compose, "momentum", model=model, weight_decay=0.1)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    (0.0 * sum(p.sum() for p in model.parameters())).backward()
    opt.step()
    groups = {g["name"]: g["params"] for g in opt.param_groups}
    for p in groups["decay"]:
        torch.testing.assert_close(p.detach(), before[id(p)] * (1 - 0.05 * 0.1))
    for p in groups["no_decay"]:
        assert torch.equal(p.detach(), before[id(p)])


def test_optimizer_state_loads_with_weights_only(compose) -> None:
    """Config lists (betas) must reach torch as plain values, or checkpoints need unpickling of omegaconf."""
    opt = _optimizer(compose, "adam")
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert list(state["param_groups"][0]["betas"]) == [0.9, 0.999]


@pytest.mark.parametrize(
    ("name", "changes", "key"),
    [("adam", {"lr": -1}, "optimizer.lr"), ("adamw", {"weight_decay": -0.1}, "optimizer.weight_decay"),
     ("nesterov", {"momentum": 0.0}, "optimizer: Nesterov"), ("adam", {"foo": 1}, "optimizer: "),
     ("sgd", {"no_decay_norm_bias": "yes"}, "optimizer.no_decay_norm_bias")],
)
def test_bad_optimizer_values_are_config_errors(compose, name: str, changes: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _optimizer(compose, name, **changes)
    assert str(info.value).startswith(key)


def test_negative_lr_fails_before_training_with_its_key(compose) -> None:
    """The user's path: the override is composed and the task built; the up-front check names optimizer.lr."""
    from labline.models.task import TaskContext, build_task

    with pytest.raises(ConfigError, match="^optimizer.lr: must be >= 0"):
        build_task(TaskContext(compose("optimizer.lr=-1"), (1, 8, 8), 10))
