"""Instantiating config nodes so that a bad value becomes a one-line error.

``hydra.utils.instantiate`` wraps whatever a constructor raises in an
``InstantiationException`` with a long message. labline unwraps it and names
the config key, so ``optimizer.lr=-1`` reads ``optimizer: Invalid learning
rate: -1.0`` and exits with code 2 before any training.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_object
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from labline.core.errors import ConfigError


def instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Hydra's ``instantiate(node, **kwargs)`` with user errors reported against ``key``."""
    if node is None or "_target_" not in node:
        raise ConfigError(key, "has no _target_", "a class or function path, e.g. torch.optim.Adam")
    try:
        get_object(node._target_)
    except Exception:
        raise ConfigError(f"{key}._target_", f"cannot import '{node._target_}'", "an importable class or function") from None
    try:
        return hydra_instantiate(node, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(key, " ".join(str(cause).split())) from None


def accepts(target: str, name: str) -> bool:
    """Whether the callable behind ``target`` takes a keyword ``name`` (e.g. ``in_shape``)."""
    params = inspect.signature(get_object(target)).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
