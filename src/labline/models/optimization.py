"""Optimizer and LR-scheduler assembly shared by every task module.

Tasks call ``configure_optimization`` from ``configure_optimizers`` so that
parameter grouping and scheduler stepping rules live in one place, and every
optimizer or scheduler option stays one YAML whose ``_target_`` is the torch
class itself (``optimizer.lr`` is the constructor's ``lr``, nothing renamed).

A few knobs are labline's, not the constructor's. They sit in the same YAML so
a sweep or an ablation overrides them like any other key, and are taken out of
the Hydra partial here, before the torch constructor sees it:

- optimizer ``no_decay_norm_bias``: exclude norm-layer weights and every bias
  from weight decay (decaying a scale or an offset only shrinks the model
  towards an arbitrary point; it does not regularise).
- scheduler ``interval`` (``epoch`` or ``step``), ``frequency`` and ``monitor``:
  what Lightning needs to step the scheduler, which belongs with the schedule.
- scheduler ``total_steps: null``: the length of the run in the scheduler's
  interval, filled in from the trainer (``estimated_stepping_batches`` for
  ``step``, ``max_epochs`` for ``epoch``), which already accounts for gradient
  accumulation and ``limit_train_batches``.

The node therefore builds a factory that only ``configure_optimization`` knows
how to call; code that wants an optimizer from config calls this function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from labline.core.errors import ConfigError

OPTIMIZER_KEYS = ("no_decay_norm_bias",)
SCHEDULER_KEYS = ("interval", "frequency", "monitor")
INTERVALS = ("epoch", "step")
# Scale/shift parameters of normalisation layers; custom norms subclassing these are covered too.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm, nn.LocalResponseNorm)
# Before a trainer is attached (the up-front check in ``build_task``) the run length is unknown. A long stand-in
# still validates every other scheduler knob; length-dependent checks run again when ``fit`` attaches the trainer.
UNKNOWN_RUN_LENGTH = 1_000_000


def configure_optimization(module: nn.Module, optimizer_factory: Callable[..., torch.optim.Optimizer],
                           scheduler_factory: Callable[..., Any] | None) -> Any:
    """What Lightning's ``configure_optimizers`` returns for these factories."""
    optimizer = build_optimizer(module, optimizer_factory)
    if scheduler_factory is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": build_scheduler(module, optimizer, scheduler_factory)}


def build_optimizer(module: nn.Module, factory: Callable[..., torch.optim.Optimizer]) -> torch.optim.Optimizer:
    """The optimizer over ``module``'s parameters, grouped by ``no_decay_norm_bias``."""
    factory, options = split_options(factory, OPTIMIZER_KEYS)
    for knob in ("lr", "weight_decay"):
        value = getattr(factory, "keywords", {}).get(knob)
        if isinstance(value, (int, float)) and value < 0:
            raise ConfigError(f"optimizer.{knob}", f"must be >= 0, got {value}", "a non-negative number")
    exclude = options.get("no_decay_norm_bias", False)
    if not isinstance(exclude, bool):
        raise ConfigError("optimizer.no_decay_norm_bias", f"must be true or false, got {exclude!r}")
    try:
        return factory(parameter_groups(module, exclude))
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError("optimizer", " ".join(str(exc).split())) from None


def parameter_groups(module: nn.Module, no_decay_norm_bias: bool) -> list[dict[str, Any]]:
    """One group (``decay``), or two when norms and biases are excluded (``no_decay`` has ``weight_decay=0``).

    Norm parameters are found by layer type rather than by name or shape, so a 1-D weight that is not a
    norm (e.g. a learned temperature) keeps its decay; any parameter named ``bias`` is excluded.
    """
    params = list(module.named_parameters())
    if not no_decay_norm_bias:
        return [{"params": [p for _, p in params], "name": "decay"}]
    norm_params = {id(p) for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    exempt = [p for name, p in params if id(p) in norm_params or name.rsplit(".", 1)[-1] == "bias"]
    exempt_ids = {id(p) for p in exempt}
    groups = [{"params": [p for _, p in params if id(p) not in exempt_ids], "name": "decay"},
              {"params": exempt, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def build_scheduler(module: nn.Module, optimizer: torch.optim.Optimizer, factory: Callable[..., Any]) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` config: the scheduler plus the interval and monitor from its YAML."""
    factory, options = split_options(factory, SCHEDULER_KEYS)
    interval = options.get("interval", "epoch")
    if interval not in INTERVALS:
        raise ConfigError("scheduler.interval", f"unknown interval '{interval}'", INTERVALS)
    keywords = getattr(factory, "keywords", {})
    if "total_steps" in keywords and keywords["total_steps"] is None:
        factory = _with_keywords(factory, {**keywords, "total_steps": run_length(module, interval)})
    try:
        scheduler = factory(optimizer)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError("scheduler", " ".join(str(exc).split())) from None
    config = {"scheduler": scheduler, "interval": interval, "frequency": options.get("frequency", 1)}
    if options.get("monitor"):
        config["monitor"] = options["monitor"]
    elif isinstance(scheduler, ReduceLROnPlateau):
        raise ConfigError("scheduler.monitor", "reduce-on-plateau needs a metric to watch", "a logged metric, e.g. val/loss")
    return config


def run_length(module: nn.Module, interval: str) -> int:
    """How many times a scheduler stepped every ``interval`` is stepped over the whole run."""
    try:
        trainer = module.trainer
    except (RuntimeError, AttributeError):
        return UNKNOWN_RUN_LENGTH
    length = trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs
    if length is None or length < 1 or math.isinf(length):
        raise ConfigError("scheduler.total_steps", "cannot be derived from an unbounded run",
                          "a finite trainer.max_epochs / trainer.max_steps, or an explicit scheduler.total_steps")
    return int(length)


def split_options(factory: Callable[..., Any], keys: tuple[str, ...]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The factory without labline's ``keys`` (what the torch constructor accepts) and those keys' values.

    Config containers in the keywords become plain lists and dicts, so an optimizer's ``betas`` are
    stored as plain values in its state dict and checkpoints load with ``torch.load(weights_only=True)``.
    """
    if not isinstance(factory, partial):
        return factory, {}
    keywords = {k: _plain(v) for k, v in factory.keywords.items()}
    options = {k: keywords.pop(k) for k in keys if k in keywords}
    return _with_keywords(factory, keywords), options


def _with_keywords(factory: partial, keywords: dict[str, Any]) -> partial:
    """A copy of the partial with new keywords; same type and attributes, so Hydra's call-time checks still run."""
    clone = type(factory)(factory.func, *factory.args, **keywords)
    clone.__dict__.update(factory.__dict__)
    return clone


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.05,
                  start_factor: float = 0.01, final_factor: float = 0.0) -> LambdaLR:
    """Linear warm-up, then cosine decay, as a multiplier of each group's base LR at step ``t``.

    With ``W = round(warmup_fraction * total_steps)`` and ``T = total_steps``: for ``t < W`` the factor is
    ``start_factor + (1 - start_factor) * t / W``, reaching the base LR at ``t = W``; then
    ``final_factor + (1 - final_factor) * (1 + cos(pi * (t - W) / (T - W))) / 2``. Adaptive optimizers
    take erratic first steps from poor moment estimates, hence the ramp. The warm-up is a fraction of
    the run so it stays proportionate whatever ``max_epochs`` a sweep picks; a fraction of 1 or more
    would leave no decay at all, so it is a ``ConfigError``, caught before training. A multiplier (not an
    absolute ``eta_min``) keeps the rule right for every parameter group.
    """
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError("scheduler.warmup_fraction", f"a warm-up of {warmup_fraction} of the run leaves no decay",
                          "a fraction in [0, 1), e.g. 0.05")
    for knob, value in (("start_factor", start_factor), ("final_factor", final_factor)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"scheduler.{knob}", f"must be in [0, 1], got {value}")
    warmup = round(warmup_fraction * total_steps)
    return LambdaLR(optimizer, partial(_warmup_cosine_factor, warmup=warmup, total=total_steps, start=start_factor,
                                       final=final_factor))


def _warmup_cosine_factor(step: int, warmup: int, total: int, start: float, final: float) -> float:
    if step < warmup:
        return start + (1.0 - start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
