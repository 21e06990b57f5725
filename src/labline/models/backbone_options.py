"""labline's own backbone keys: ``init``, ``weights`` and ``freeze``.

Every backbone config carries them, and ``build_backbone`` pops them before
``instantiate``, so they work on any ``torch.nn.Module`` reachable by
``_target_``, including classes that know nothing about them:

- ``init``: re-initialise weights. Xavier suits tanh/sigmoid nets, Kaiming
  (He) ReLU nets, orthogonal recurrent weights. Recurrent and attention
  weights are initialised per gate / per q, k, v block, so each square block
  of an orthogonal GRU is itself orthogonal.
- ``weights``: start from trained weights, a Lightning checkpoint file (keys
  ``backbone.*``) or the ``checkpoints/`` artifact of an MLflow run in the
  project's store (fetched by the runs layer: models never talk to MLflow).
  Applied after ``init``.
- ``freeze``: the linear probe. Parameters stop requiring gradients and a
  forward pre-hook puts the backbone in eval mode before every forward, so
  whatever toggles ``train()`` (Lightning after each validation, user code),
  batch-norm statistics and dropout stay frozen. A hook, not a wrapper, keeps
  the checkpoint keys ``backbone.*`` identical to an unfrozen run's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from labline.core.errors import ConfigError

OPTION_KEYS = ("init", "weights", "freeze")
CHECKPOINT_PREFIX = "backbone."
WEIGHTS_VALID = "a Lightning checkpoint path or an MLflow run id"

_INITS = {
    "xavier": nn.init.xavier_uniform_,
    "kaiming": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
}
_INITIALISED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase, nn.MultiheadAttention)


@dataclass(frozen=True)
class BackboneOptions:
    init: str | None = None
    weights: str | None = None
    freeze: bool = False


def split_options(node: DictConfig) -> tuple[DictConfig, BackboneOptions]:
    """The node without labline's keys (what ``instantiate`` sees) and those keys, checked."""
    rest = copy.copy(node)
    with open_dict(rest):
        values = {key: rest.pop(key) for key in OPTION_KEYS if key in rest}
    options = BackboneOptions(**values)
    if options.init is not None and options.init not in _INITS:
        raise ConfigError("backbone.init", f"unknown init '{options.init}'", ["null", *_INITS])
    if options.weights is not None and (not isinstance(options.weights, str) or not options.weights):
        raise ConfigError("backbone.weights", f"must be a path or a run id, got {options.weights!r}", WEIGHTS_VALID)
    if not isinstance(options.freeze, bool):
        raise ConfigError("backbone.freeze", f"must be true or false, got {options.freeze!r}", "true, false")
    return rest, options


def apply_options(backbone: nn.Module, options: BackboneOptions, weights: Path | None = None) -> None:
    """``weights``: the local file ``options.weights`` was resolved to (see ``models.checkpoints``)."""
    if options.init:
        initialise(backbone, options.init)
    if weights is not None:
        load_weights(backbone, weights)
    if options.freeze:
        freeze(backbone)


def initialise(module: nn.Module, scheme: str) -> None:
    """Re-draw the weights of every linear, conv, recurrent and attention layer; zero their biases."""
    init = _INITS[scheme]
    with torch.no_grad():
        for layer in module.modules():
            if not isinstance(layer, _INITIALISED):
                continue
            for name, param in layer.named_parameters(recurse=False):
                if param.ndim >= 2:
                    for block in param.chunk(_blocks(layer, name, param)):
                        init(block)
                elif "bias" in name:
                    param.zero_()


def _blocks(layer: nn.Module, name: str, param: torch.Tensor) -> int:
    """How many stacked matrices a weight holds: gates of an RNN (3 GRU, 4 LSTM), q/k/v of attention."""
    if isinstance(layer, nn.RNNBase) and param.shape[0] % layer.hidden_size == 0:
        return param.shape[0] // layer.hidden_size
    if isinstance(layer, nn.MultiheadAttention) and name == "in_proj_weight":
        return 3
    return 1


def freeze(backbone: nn.Module) -> None:
    backbone.requires_grad_(False)
    backbone.register_forward_pre_hook(_stay_in_eval)


def _stay_in_eval(module: nn.Module, args: Any) -> None:
    module.eval()


def load_weights(backbone: nn.Module, path: Path) -> None:
    """Load ``backbone.*`` weights from a checkpoint file: its state dict must fit this backbone exactly, or fit the
    part a backbone's ``pretrained_part(state)`` names, for a backbone built around another that can start from
    that one's checkpoint (an FCN's encoder from a classifier's conv backbone, ``models.backbones.fcn``)."""
    state = _read_checkpoint(path)
    part = backbone.pretrained_part(state) if hasattr(backbone, "pretrained_part") else None
    target, prefix, state = part or (backbone, "", state)
    own = target.state_dict()
    _check_input_channels(target, state, path)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        problems = [f"{len(keys)} {what} (e.g. {prefix}{keys[0]})" for what, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("keys of another shape", reshaped)) if keys]
        raise ConfigError("backbone.weights", f"'{path}' does not fit this backbone: {', '.join(problems)}",
                          "a checkpoint of the same backbone config")
    target.load_state_dict(state)


def _check_input_channels(target: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Weights trained on inputs of other channels (RGB against grayscale) are named as that, not as a reshaped key:
    the first conv's weight ``(out, in / groups, k...)`` says what the checkpoint's backbone was trained on."""
    first = next(((name, m) for name, m in target.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    if first is None or f"{first[0]}.weight" not in state:
        return
    name, conv = first
    saved, own = state[f"{name}.weight"].shape, conv.weight.shape
    if len(saved) == len(own) and saved[1] != own[1]:
        raise ConfigError("backbone.weights", f"'{path}' was trained on {saved[1] * conv.groups}-channel inputs, "
                          f"these inputs have {conv.in_channels} channels",
                          f"a checkpoint of a backbone trained on {conv.in_channels}-channel inputs")


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError("backbone.weights", f"cannot read '{path}' as a checkpoint: {reason}", WEIGHTS_VALID) from None
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else {}
    weights = {k.removeprefix(CHECKPOINT_PREFIX): v for k, v in state.items()
               if isinstance(k, str) and k.startswith(CHECKPOINT_PREFIX) and isinstance(v, torch.Tensor)}
    if not weights:
        raise ConfigError("backbone.weights", f"'{path}' holds no '{CHECKPOINT_PREFIX}*' weights",
                          "a labline task checkpoint or a state dict with backbone.-prefixed keys")
    return weights
