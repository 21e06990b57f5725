"""Exponential moving average (EMA) of the weights, used wherever the model is evaluated.

After every optimizer step the shadow ``v_t = beta * v_{t-1} + (1 - beta) * theta_t`` is updated. With
``bias_correction`` the shadow starts at ``v_0 = 0`` and evaluation uses ``v_t / (1 - beta^t)``, an exact
weighted mean of the weights visited so far; without it the shadow starts at the initial weights
(``v_0 = theta_0``), which otherwise would pull it towards zero for ~1/(1-beta) steps.

Where the averaged weights are used, and why:

- validation (and a test of the in-memory model): the shadow is copied into the model at the start of
  the epoch and the raw weights are put back at its end, so training continues from the raw weights.
  Early stopping and "best epoch" therefore judge the weights that will be kept.
- checkpoints: ``state_dict`` holds the averaged weights, so every loader (``trainer.test(ckpt_path=...)``,
  ``load_from_checkpoint``, a plain ``torch.load``) evaluates the EMA model without knowing about this
  callback. The raw weights and the shadow travel in this callback's entry of ``checkpoint["callbacks"]``;
  resuming ``fit`` from the checkpoint puts the raw weights back before training continues. A test from a
  checkpoint does not swap again: the checkpoint's weights already are the average of that epoch.
- buffers (batch-norm running statistics) are not averaged: the raw model's statistics are used.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn

from labline.core.errors import ConfigError


class EMA(pl.Callback):
    def __init__(self, beta: float = 0.99, bias_correction: bool = True):
        if not 0.0 <= beta < 1.0:
            raise ConfigError("callbacks.ema.beta", f"must be in [0, 1), got {beta}", "0.9 .. 0.999")
        self.beta = beta
        self.bias_correction = bias_correction
        self.shadow: dict[str, torch.Tensor] = {}
        self.updates = 0
        self.last_global_step = 0
        self._raw: dict[str, torch.Tensor] | None = None

    def averaged(self) -> dict[str, torch.Tensor]:
        """The weights evaluation uses: the shadow, bias-corrected when asked."""
        if not self.bias_correction:
            return self.shadow
        scale = 1.0 - self.beta**self.updates
        return {name: v / scale for name, v in self.shadow.items()}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = dict(_parameters(pl_module))
        if self.shadow:  # resumed from a checkpoint: follow the parameters to their device
            self.shadow = {name: v.to(params[name].device) for name, v in self.shadow.items()}
            return
        start = torch.zeros_like if self.bias_correction else torch.clone
        self.shadow = {name: start(p.detach()).float() for name, p in params.items()}
        self.last_global_step = trainer.global_step

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Once per optimizer step: under gradient accumulation most batches leave the weights unchanged."""
        if trainer.global_step == self.last_global_step:
            return
        for name, p in _parameters(pl_module):
            self.shadow[name].lerp_(p.detach().float(), 1.0 - self.beta)
        self.updates += 1
        self.last_global_step = trainer.global_step

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_in(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore(pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_in(trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore(pl_module)

    def _swap_in(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        in_memory = trainer.state.fn == TrainerFn.FITTING or trainer.ckpt_path is None
        if self.updates == 0 or not in_memory:
            return
        self._raw = {name: p.detach().clone() for name, p in _parameters(pl_module)}
        _load(pl_module, self.averaged())

    def _restore(self, pl_module: pl.LightningModule) -> None:
        if self._raw is not None:
            _load(pl_module, self._raw)
            self._raw = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.updates == 0:
            return
        weights = checkpoint["state_dict"]
        raw = {name: weights[name] for name in self.shadow}
        for name, value in self.averaged().items():
            weights[name] = value.to(raw[name].dtype, copy=True)
        checkpoint["callbacks"][self.state_key]["raw"] = raw

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Resuming training continues from the raw weights; evaluating a checkpoint keeps its averaged ones."""
        raw = checkpoint.get("callbacks", {}).get(self.state_key, {}).get("raw")
        if raw is not None and trainer.state.fn == TrainerFn.FITTING:
            _load(pl_module, raw)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "last_global_step": self.last_global_step, "shadow": self.shadow}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = state_dict["updates"]
        self.last_global_step = state_dict["last_global_step"]
        self.shadow = state_dict["shadow"]


def _parameters(module: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Every name a parameter has in the state dict, tied parameters included."""
    return list(module.named_parameters(remove_duplicate=False))


@torch.no_grad()
def _load(module: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    for name, p in _parameters(module):
        p.copy_(values[name])
