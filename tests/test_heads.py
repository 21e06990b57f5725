"""Heads built from the composed config: shapes, gradients, and multi-task weighting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.models.task import TaskContext, build_task

PARITY = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
HIGH = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])


def _head(cfg, in_features: int = 16, num_classes: int = 10) -> torch.nn.Module:
    return instantiate(cfg.head, "head", in_features=in_features, num_classes=num_classes)


@pytest.mark.parametrize("option", ["linear", "mlp"])
def test_classifier_heads_output_one_score_per_class(compose, option: str) -> None:
    head = _head(compose(f"head={option}"))
    x = torch.randn(4, 16)
    out = head(x)
    assert out.shape == (4, 10) and head.out_features == 10
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_mlp_head_hidden_widths_and_bad_activation(compose) -> None:
    head = _head(compose("head=mlp", "head.hidden=[32,8]", "head.activation=gelu"))
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 8), (8, 10)]
    with pytest.raises(ConfigError, match="head.activation"):
        _head(compose("head=mlp", "head.activation=swishy"))


def test_projection_head_gives_unit_embeddings(compose) -> None:
    head = _head(compose("head=projection", "head.dim=8"))
    z = head(torch.randn(5, 16))
    assert z.shape == (5, 8)
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    assert _head(compose("head=projection", "head.normalize=false"))(torch.randn(5, 16)).norm(dim=1).std() > 0


def test_classification_refuses_a_projection_head(compose) -> None:
    with pytest.raises(ConfigError, match="one per class"):
        build_task(TaskContext(compose("head=projection", "backbone=mlp"), (1, 8, 8), 10))


def test_multitask_loss_is_the_configured_weighted_sum(compose) -> None:
    cfg = compose("experiment=digits_multitask", "loss.tasks.parity.weight=0.25")
    head, loss_fn = _head(cfg), instantiate(cfg.loss, "loss")
    out = head(torch.randn(6, 16))
    assert {k: v.shape[1] for k, v in out.items()} == {"class": 10, "parity": 2, "high": 2}
    y = torch.tensor([0, 3, 5, 7, 8, 9])
    expected = (F.cross_entropy(out["class"], y) + 0.25 * F.cross_entropy(out["parity"], PARITY[y])
                + 0.5 * F.cross_entropy(out["high"], HIGH[y]))
    assert torch.allclose(loss_fn(out, y), expected)


def test_multitask_heads_all_train_and_zero_weight_stops_a_head(compose) -> None:
    torch.manual_seed(0)
    cfg = compose("experiment=digits_multitask", "loss.tasks.high.weight=0")
    head, loss_fn = _head(cfg), instantiate(cfg.loss, "loss")
    x, y = torch.randn(64, 16), torch.arange(64) % 10
    before = loss_fn.terms(head(x), y)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        loss_fn(head(x), y).backward()
        opt.step()
    after = loss_fn.terms(head(x), y)
    assert after["class"] < before["class"] and after["parity"] < before["parity"]
    assert torch.allclose(after["high"], before["high"]), "a head with weight 0 must get no gradient"


def test_multitask_needs_its_loss_and_matching_names(compose) -> None:
    with pytest.raises(ConfigError) as err:
        build_task(TaskContext(compose("head=multitask", "backbone=mlp"), (1, 8, 8), 10))
    assert err.value.key == "loss"
    with pytest.raises(ConfigError) as err:
        build_task(TaskContext(compose("experiment=digits_multitask", "backbone=mlp", "~loss.tasks.parity"), (1, 8, 8), 10))
    assert err.value.key == "loss.tasks" and "parity" in str(err.value)
    with pytest.raises(ConfigError, match="loss.tasks.parity.labels: has 2 entries"):
        cfg = compose("experiment=digits_multitask", "backbone=mlp", "loss.tasks.parity.labels=[0,1]")
        build_task(TaskContext(cfg, (1, 8, 8), 10))
    with pytest.raises(ConfigError, match="head.main"):
        _head(compose("experiment=digits_multitask", "head.main=digit"))
