"""Any torch loss as a config option."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import get_object
from torch import nn

from labline.core.errors import ConfigError
from labline.losses import labels


class TorchLoss(nn.Module):
    """A ``torch.nn`` loss plus the label encoding it expects.

    torch's losses cannot say which encoding they compare with (CrossEntropyLoss
    takes indices, BCEWithLogitsLoss multi-hot vectors, MSELoss one-hot vectors when
    used for classification), and they take per-class weights as tensors while
    configs hold lists. This wrapper adds the first and converts the second, so
    one YAML per option reaches any torch loss with flat keys (``loss.weight=[...]``).
    """

    def __init__(self, criterion: str, target: str = "index", **options: Any):
        super().__init__()
        self.target = labels.check_encoding(target)
        try:
            cls = get_object(criterion)
        except Exception:
            raise ConfigError("loss.criterion", f"cannot import '{criterion}'",
                              "a torch loss class, e.g. torch.nn.MSELoss") from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError("loss.criterion", f"'{criterion}' is not a torch.nn.Module class", "e.g. torch.nn.MSELoss")
        tensors = {k: torch.tensor(list(v), dtype=torch.float32) for k, v in options.items()
                   if isinstance(v, Sequence) and not isinstance(v, str)}
        self.fn = cls(**{**options, **tensors})

    def forward(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(outputs, target)
