"""Building a backbone from config: any ``torch.nn.Module`` reachable by ``_target_``, with labline's own keys.

Backbones receive the input shape when their constructor takes ``in_shape``; any other module works too,
its feature width found by one dummy forward pass. labline's ``init``/``weights``/``freeze`` keys (see
``backbone_options``) are popped first, so the class never sees them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from labline.core.errors import ConfigError
from labline.core.instantiate import accepts, instantiate
from labline.models.backbone_options import WEIGHTS_VALID, apply_options, split_options
from labline.models.checkpoints import CheckpointResolver, local_checkpoint


def build_backbone(node: DictConfig, in_shape: Sequence[int],
                   resolve: CheckpointResolver = local_checkpoint) -> tuple[nn.Module, int]:
    """The backbone and its feature width; ``backbone.weights`` (a file, or whatever ``resolve`` accepts, such
    as an MLflow run id) is loaded after ``init``."""
    node, options = split_options(node)
    try:
        takes_shape = accepts(node._target_, "in_shape")
    except Exception:  # a missing or unimportable _target_: instantiate() below reports it as a one-line ConfigError
        takes_shape = False
    backbone = instantiate(node, "backbone", **({"in_shape": list(in_shape)} if takes_shape else {}))
    if not isinstance(backbone, nn.Module):
        raise ConfigError("backbone._target_", f"built a {type(backbone).__name__}, not a torch.nn.Module")
    width = feature_width(backbone, in_shape)
    weights = resolve(options.weights, "backbone.weights", WEIGHTS_VALID).path if options.weights else None
    apply_options(backbone, options, weights)
    return backbone, width


def feature_width(backbone: nn.Module, in_shape: Sequence[int]) -> int:
    """Its ``out_features``, else the width of one dummy forward pass (flattened)."""
    width = getattr(backbone, "out_features", None)
    if width is not None:
        return int(width)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            width = backbone(torch.zeros(2, *in_shape)).flatten(1).shape[1]
    except Exception as exc:
        raise ConfigError("backbone", f"cannot run on inputs of shape {tuple(in_shape)}: {exc}") from None
    finally:
        backbone.train(was_training)
    return int(width)
