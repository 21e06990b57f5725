"""Clipping, accumulation, mixed precision and a combined run, through real Lightning fits on digits."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from labline.callbacks.ema import EMA
from labline.core.errors import ConfigError
from labline.runs.assembly import prepare_run
from labline.runs.lightning_run import train_and_test
from testroot import ROOT

FAST = ["trainer.max_epochs=1", "+trainer.limit_train_batches=6", "+trainer.limit_val_batches=1",
        "+trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "callbacks=none", "threads=1"]


class GradProbe(pl.Callback):
    """Gradients as the optimizer used them (Lightning clears them only before the next backward),
    and the dtype the model computes in."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.max_abs: list[float] = []
        self.dtypes: set[torch.dtype] = set()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        linear = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda module, args, out: self.dtypes.add(out.dtype))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        self.max_abs.append(max(g.abs().max().item() for g in grads))


def _fit(compose, tmp_path, *overrides: str) -> tuple[pl.Trainer, GradProbe, pl.LightningModule]:
    probe = GradProbe()
    run = prepare_run(compose(*FAST, *overrides), tmp_path, ROOT, extra_callbacks=[probe])
    run.curves.tracker = None  # no MLflow run here: curves go to the CSV only
    run.trainer.fit(run.task, datamodule=run.datamodule)
    return run.trainer, probe, run.task


def test_clipping_by_norm_and_by_value_bound_the_gradients(compose, tmp_path) -> None:
    trainer, free, _ = _fit(compose, tmp_path / "free")
    assert trainer.global_step == 6 and min(free.norms) > 0.01 and min(free.max_abs) > 0.001
    _, by_norm, _ = _fit(compose, tmp_path / "norm", "trainer.gradient_clip_val=0.01")
    assert len(by_norm.norms) == 6 and max(by_norm.norms) <= 0.01 * (1 + 1e-4)
    _, by_value, _ = _fit(compose, tmp_path / "value", "trainer.gradient_clip_val=0.001", "trainer.gradient_clip_algorithm=value",
                          "trainer.precision=bf16-mixed")
    assert len(by_value.max_abs) == 6 and max(by_value.max_abs) <= 0.001 * (1 + 1e-6)  # float32 rounding of 0.001
    assert free.dtypes == {torch.float32} and by_value.dtypes == {torch.bfloat16}  # mixed precision computes in bf16


def test_accumulation_divides_the_optimizer_steps_and_sizes_onecycle(compose, tmp_path) -> None:
    trainer, _, _ = _fit(compose, tmp_path, "trainer.accumulate_grad_batches=3", "scheduler=onecycle")
    assert trainer.global_step == 2
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == trainer.estimated_stepping_batches == 2
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_bad_clipping_algorithm_fails_before_training(compose, tmp_path) -> None:
    with pytest.raises(ConfigError, match="^trainer: .*norm2"):
        prepare_run(compose(*FAST, "trainer.gradient_clip_algorithm=norm2"), tmp_path, ROOT)


def test_a_combined_run_trains_and_tests_with_finite_metrics(compose, tmp_path) -> None:
    cfg = compose("optimizer=adamw", "scheduler=warmup_cosine", "callbacks=ema", "augment=standard", "trainer.max_epochs=1",
                  "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2", "threads=1",
                  "trainer.enable_progress_bar=false", "logger.experiment_name=tests")
    metrics = train_and_test(cfg, tmp_path, ROOT)
    assert math.isfinite(metrics["test/loss"]) and 0.0 <= metrics["test/acc"] <= 1.0
    checkpoint = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    ema_state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith(EMA.__qualname__))
    assert ema_state["updates"] == 3
    name = next(iter(ema_state["shadow"]))
    assert not torch.equal(checkpoint["state_dict"][name], ema_state["raw"][name])  # the checkpoint holds the average
