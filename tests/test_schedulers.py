"""Scheduler options built from the real conf/: each LR follows its rule over a few steps."""

from __future__ import annotations

import io
import math
from functools import cache
from types import SimpleNamespace

import pytest
import torch
from omegaconf import open_dict
from torch import nn

from labline.core.config import compose_config, hydra_context
from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.models.optimization import UNKNOWN_RUN_LENGTH, configure_optimization
from testroot import CONF


@pytest.fixture(scope="module")
def compose():
    """The conftest ``compose`` with one Hydra initialisation and a cache for the module (~0.3 s per compose saved)."""
    with hydra_context(CONF):
        yield cache(lambda *overrides: compose_config(list(overrides), conf=CONF))


class Attached(nn.Linear):
    """A module attached to a stand-in trainer that knows the run length, as Lightning's is during fit."""

    def __init__(self, max_epochs: int = 10, stepping_batches: int = 20):
        super().__init__(2, 2)
        self.trainer = SimpleNamespace(max_epochs=max_epochs, estimated_stepping_batches=stepping_batches)


def _configure(compose, name: str, module: nn.Module | None = None, optimizer: str = "sgd", **changes: object) -> dict:
    cfg = compose(f"scheduler={name}", f"optimizer={optimizer}", "trainer.max_epochs=10")
    node = cfg.scheduler.copy()
    with open_dict(node):
        node.update(changes)
    return configure_optimization(module or Attached(), instantiate(cfg.optimizer, "optimizer"), instantiate(node, "scheduler"))


def _lrs(config: dict, steps: int, metric: float | None = None) -> list[float]:
    """The LR of the first group before each of ``steps`` scheduler steps, stepped as Lightning does."""
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)
    return lrs


def test_step_multiplies_by_gamma_every_step_size(compose) -> None:
    config = _configure(compose, "step", step_size=2, gamma=0.5)
    assert config["lr_scheduler"]["interval"] == "epoch"
    assert _lrs(config, 6) == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])


def test_cosine_runs_from_lr_to_eta_min_over_max_epochs(compose) -> None:
    config = _configure(compose, "cosine", eta_min=0.01)
    lrs = _lrs(config, 11)
    assert lrs[0] == pytest.approx(0.05) and lrs[10] == pytest.approx(0.01)
    assert lrs[5] == pytest.approx((0.05 + 0.01) / 2)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_warmup_cosine_ramps_linearly_then_decays(compose) -> None:
    config = _configure(compose, "warmup_cosine", warmup_fraction=0.25, start_factor=0.2, final_factor=0.1)
    assert config["lr_scheduler"]["interval"] == "step"
    lrs = [lr / 0.05 for lr in _lrs(config, 21)]  # 20 steps derived from the trainer, warm-up 5
    assert lrs[:6] == pytest.approx([0.2, 0.36, 0.52, 0.68, 0.84, 1.0])
    assert lrs[10] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 15)))
    assert lrs[20] == pytest.approx(0.1)


def test_warmup_cosine_per_epoch_takes_max_epochs(compose) -> None:
    config = _configure(compose, "warmup_cosine", interval="epoch", warmup_fraction=0.2, start_factor=0.0)
    lrs = [lr / 0.05 for lr in _lrs(config, 11)]
    assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0]) and lrs[10] == pytest.approx(0.0, abs=1e-12)


def test_warmup_as_long_as_the_run_fails_before_training(compose) -> None:
    """No trainer yet (the up-front check in build_task): the fraction alone decides."""
    with pytest.raises(ConfigError, match="^scheduler.warmup_fraction"):
        _configure(compose, "warmup_cosine", module=nn.Linear(2, 2), warmup_fraction=1.0)


def test_plateau_halves_the_lr_after_patience_epochs_without_improvement(compose) -> None:
    config = _configure(compose, "plateau")
    assert config["lr_scheduler"]["monitor"] == "val/loss" and config["lr_scheduler"]["interval"] == "epoch"
    # The first loss sets the best; patience=3 more epochs are tolerated; the 5th flat epoch halves the lr.
    assert _lrs(config, 9, metric=1.0) == pytest.approx([0.05] * 5 + [0.025] * 4)


def test_plateau_without_monitor_is_a_config_error(compose) -> None:
    with pytest.raises(ConfigError, match="^scheduler.monitor"):
        _configure(compose, "plateau", monitor=None)


def test_onecycle_peaks_at_max_lr_and_spans_the_estimated_steps(compose) -> None:
    config = _configure(compose, "onecycle", optimizer="momentum")
    scheduler = config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step" and scheduler.total_steps == 20
    lrs = _lrs(config, 20)
    peak = 0.05  # max_lr: ${optimizer.lr}
    assert lrs[0] == pytest.approx(peak / 25) and max(lrs) == pytest.approx(peak)
    assert lrs.index(max(lrs)) == round(0.3 * 20) - 1
    assert lrs[-1] == pytest.approx(peak / 25 / 1e4)


def test_length_is_a_stand_in_before_the_trainer_exists(compose) -> None:
    config = _configure(compose, "onecycle", module=nn.Linear(2, 2), optimizer="adam")
    assert config["lr_scheduler"]["scheduler"].total_steps == UNKNOWN_RUN_LENGTH


@pytest.mark.parametrize(
    ("name", "optimizer", "changes", "key"),
    [("step", "sgd", {"interval": "batch"}, "scheduler.interval"),
     ("onecycle", "adagrad", {}, "scheduler: "),  # cycle_momentum needs momentum or betas
     ("onecycle", "adam", {"pct_start": 2.0}, "scheduler: ")],
)
def test_bad_scheduler_values_are_config_errors(compose, name: str, optimizer: str, changes: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _configure(compose, name, optimizer=optimizer, **changes)
    assert str(info.value).startswith(key)


def test_unbounded_run_cannot_size_a_schedule(compose) -> None:
    with pytest.raises(ConfigError, match="^scheduler.total_steps"):
        _configure(compose, "onecycle", module=Attached(stepping_batches=math.inf), optimizer="adam")


@pytest.mark.parametrize("name", ["step", "cosine", "warmup_cosine", "plateau", "onecycle"])
def test_scheduler_state_loads_with_weights_only(compose, name: str) -> None:
    """Checkpoints hold scheduler states; LambdaLR must keep its rule (a partial) out of them."""
    config = _configure(compose, name)
    buffer = io.BytesIO()
    torch.save(config["lr_scheduler"]["scheduler"].state_dict(), buffer)
    buffer.seek(0)
    assert isinstance(torch.load(buffer, weights_only=True), dict)
