"""The EMA teacher of mean teacher and DINO: a frozen copy of the student, moved towards it after every step.

``teacher <- m teacher + (1 - m) student`` for every parameter and floating buffer (batch-norm statistics
follow the same average); integer buffers (batch counts) are copied. ``m = 0`` makes the teacher a copy of
the current student (DINO's "no EMA teacher" ablation). Two momentum schedules:

- ``warmup_momentum(step, m)`` = ``min(1 - 1 / (step + 1), m)`` (Tarvainen & Valpola 2017): early on the
  teacher is the plain mean of the students so far, not dominated by the random initial weights;
- ``cosine_momentum(step, total, base, final)`` = ``final - (final - base) (cos(pi step / total) + 1) / 2``
  (DINO: 0.996 -> 1 over training).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from labline.core.errors import ConfigError


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that no optimizer moves."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s.detach(), 1.0 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        if t.dtype.is_floating_point:
            t.lerp_(s, 1.0 - momentum)
        else:
            t.copy_(s)


def warmup_momentum(step: int, momentum: float) -> float:
    return min(1.0 - 1.0 / (step + 1), momentum)


def cosine_momentum(step: int, total: int, base: float, final: float = 1.0) -> float:
    if total <= 0:
        return base
    return final - (final - base) * (math.cos(math.pi * min(step, total) / total) + 1.0) / 2.0


def check_momentum(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"must be in [0, 1], got {value!r}", "e.g. 0.99 .. 0.999; 0: the teacher is the student")
    return float(value)
