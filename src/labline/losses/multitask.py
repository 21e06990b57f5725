"""The loss of hard parameter sharing: one loss per named head, summed with weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.losses import labels

TASK_KEYS = ("loss", "weight", "labels")


class MultiTaskLoss(nn.Module):
    """``sum_i weight_i * loss_i(outputs[name_i], labels_i)`` over the heads of ``head=multitask``.

    Each head's labels derive from the class label by a lookup table in the
    config (``labels: [0, 1, 0, 1, ...]`` maps class c to ``labels[c]``; null keeps
    the class label), so auxiliary targets such as a digit's parity need no code
    and no extra data. Any function of the class label is such a table.
    """

    target = "index"

    def __init__(self, tasks: Mapping[str, Mapping[str, Any]]):
        super().__init__()
        if not tasks:
            raise ConfigError("loss.tasks", "is empty", "one entry per head name of head.outputs")
        self.losses = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        self.tables: dict[str, list[int] | None] = {}
        for name, spec in tasks.items():
            key = f"loss.tasks.{name}"
            unknown = sorted(set(spec) - set(TASK_KEYS))
            if unknown:
                raise ConfigError(f"{key}.{unknown[0]}", "is not a key of a multi-task entry", TASK_KEYS)
            if not isinstance(spec.get("loss"), nn.Module):
                raise ConfigError(f"{key}.loss", "must be a loss config with a _target_",
                                  "e.g. the contents of conf/loss/cross_entropy.yaml")
            weight = spec.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"{key}.weight", f"must be a number >= 0, got {weight!r}")
            table = spec.get("labels")
            if table is not None and (not table or any(not isinstance(v, int) or v < 0 for v in table)):
                raise ConfigError(f"{key}.labels", f"must map each class to a label >= 0, got {table}",
                                  "null (the class label) or a list with one integer per class")
            self.losses[name] = spec["loss"]
            self.weights[name] = float(weight)
            self.tables[name] = None if table is None else list(table)

    def check_classes(self, num_classes: int) -> None:
        """Every label table must cover every class of the dataset."""
        for name, table in self.tables.items():
            if table is not None and len(table) != num_classes:
                raise ConfigError(f"loss.tasks.{name}.labels",
                                  f"has {len(table)} entries but the dataset has {num_classes} classes",
                                  f"a list of {num_classes} integers")

    def terms(self, outputs: Mapping[str, torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each head's unweighted loss, so tasks can log them apart."""
        result = {}
        for name, fn in self.losses.items():
            table = self.tables[name]
            target = y if table is None else torch.tensor(table, device=y.device)[y]
            out = outputs[name]
            result[name] = fn(out, labels.encode(target, getattr(fn, "target", "index"), out.shape[1]))
        return result

    def weighted(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in terms.items())

    def forward(self, outputs: Mapping[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        return self.weighted(self.terms(outputs, y))
