"""EMA of weights: closed form on a scalar parameter, shadow weights for evaluation and in the checkpoint."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from labline.callbacks.ema import EMA
from labline.core.errors import ConfigError

TARGETS = [4.0, -2.0, 3.0, 8.0, 1.0, 5.0]
BETA = 0.6


class Scalar(pl.LightningModule):
    """One scalar weight pulled towards a different target each batch, so every step moves it differently;
    records the weight each evaluation step sees."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.seen: dict[str, list[float]] = {"val": [], "test": []}

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return ((self.w - batch[0]) ** 2).sum()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.seen["val"].append(self.w.item())

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.seen["test"].append(self.w.item())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.tensor(TARGETS)), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(1)), batch_size=1)

    test_dataloader = val_dataloader


class Trajectory(pl.Callback):
    """theta_t after every optimizer step (the raw weight the EMA averages)."""

    def __init__(self) -> None:
        self.thetas: list[float] = []
        self.steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        if trainer.global_step > self.steps:
            self.steps = trainer.global_step
            self.thetas.append(pl_module.w.item())


def _trainer(tmp_path, *callbacks: pl.Callback, **kwargs: object) -> pl.Trainer:
    options = {"max_epochs": 1, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
               "num_sanity_val_steps": 0, "default_root_dir": tmp_path, "enable_checkpointing": False} | kwargs
    return pl.Trainer(callbacks=list(callbacks), **options)


def _closed_form(theta0: float, thetas: list[float], beta: float, bias_correction: bool) -> float:
    v = 0.0 if bias_correction else theta0
    for theta in thetas:
        v = beta * v + (1 - beta) * theta
    return v / (1 - beta ** len(thetas)) if bias_correction else v


@pytest.mark.parametrize("bias_correction", [True, False])
def test_shadow_matches_closed_form_and_validation_uses_it(tmp_path, bias_correction: bool) -> None:
    module, ema, trajectory = Scalar(), EMA(beta=BETA, bias_correction=bias_correction), Trajectory()
    _trainer(tmp_path, ema, trajectory).fit(module)
    assert len(trajectory.thetas) == ema.updates == len(TARGETS)
    expected = _closed_form(1.0, trajectory.thetas, BETA, bias_correction)
    assert ema.averaged()["w"].item() == pytest.approx(expected, rel=1e-6)
    assert module.seen["val"] == [pytest.approx(expected, rel=1e-6)]
    assert module.w.item() == pytest.approx(trajectory.thetas[-1])  # raw weights restored after validation
    assert abs(expected - trajectory.thetas[-1]) > 0.1  # so the two checks above can tell the weights apart


def test_bias_correction_starts_from_zero_not_from_the_initial_weight(tmp_path) -> None:
    corrected, plain = EMA(beta=BETA, bias_correction=True), EMA(beta=BETA, bias_correction=False)
    _trainer(tmp_path, corrected).fit(Scalar())
    _trainer(tmp_path, plain).fit(Scalar())  # same data, same SGD: the same trajectory
    assert corrected.shadow["w"].item() == pytest.approx(plain.shadow["w"].item() - BETA ** len(TARGETS) * 1.0, rel=1e-6)


def test_one_update_per_optimizer_step_under_accumulation(tmp_path) -> None:
    ema = EMA(beta=BETA)
    trainer = _trainer(tmp_path, ema, accumulate_grad_batches=3)
    trainer.fit(Scalar())
    assert trainer.global_step == ema.updates == 2


def test_checkpoint_carries_the_averaged_weights_and_test_uses_them(tmp_path) -> None:
    module, ema = Scalar(), EMA(beta=BETA)
    trainer = _trainer(tmp_path, ema)
    trainer.fit(module)
    raw, averaged = module.w.item(), ema.averaged()["w"].item()
    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["state_dict"]["w"].item() == pytest.approx(averaged)
    assert checkpoint["callbacks"][ema.state_key]["raw"]["w"].item() == pytest.approx(raw)
    assert module.w.item() == pytest.approx(raw)  # saving changed the file, not the model

    fresh = Scalar()
    _trainer(tmp_path, EMA(beta=BETA)).test(fresh, ckpt_path=path, verbose=False)
    assert fresh.seen["test"] == [pytest.approx(averaged)]


def test_resuming_continues_from_the_raw_weights(tmp_path) -> None:
    first, ema = Scalar(), EMA(beta=BETA)
    trainer = _trainer(tmp_path, ema)
    trainer.fit(first)
    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)

    class FirstStep(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.w = pl_module.w.item()

    resumed, probe, ema2 = Scalar(), FirstStep(), EMA(beta=BETA)
    _trainer(tmp_path, ema2, probe, max_epochs=2).fit(resumed, ckpt_path=path)
    assert probe.w == pytest.approx(first.w.item())
    assert ema2.updates == 2 * len(TARGETS)


def test_in_memory_test_without_checkpoint_also_uses_the_shadow(tmp_path) -> None:
    module, ema = Scalar(), EMA(beta=BETA)
    trainer = _trainer(tmp_path, ema)
    trainer.fit(module)
    raw = module.w.item()
    trainer.test(module, verbose=False)
    assert module.seen["test"] == [pytest.approx(ema.averaged()["w"].item())]
    assert module.w.item() == pytest.approx(raw)


def test_beta_outside_unit_interval_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="^callbacks.ema.beta"):
        EMA(beta=1.0)


def test_ema_is_a_named_callback_an_ablation_can_remove(compose) -> None:
    cfg = compose("callbacks=ema")
    assert set(cfg.callbacks) == {"early_stopping", "ema"}
    assert cfg.callbacks.ema._target_ == "labline.callbacks.ema.EMA"
    assert compose("callbacks=ema", "callbacks.ema=null").callbacks.ema is None
