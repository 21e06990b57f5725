"""Knowledge-distillation loss terms and their weighted sum.

- ``soft`` (Hinton et al. 2015): ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``, per-sample mean.
- ``hard``: the task's own loss on the true labels (the ``loss`` config group, cross-entropy by default).
- ``feature`` (FitNets): ``mean over samples of ||P f_s - f_t||^2``, ``P`` a learned linear map (vectors) or
  1x1 convolution (maps) when the widths differ, identity otherwise.
- ``attention`` (Zagoruyko & Komodakis 2017): per layer pair, the activation ``A`` (N, C, ...) becomes the
  map ``sum_c |A_c|^p``, flattened and L2-normalised to ``q``; the term is the mean over pairs of the
  per-sample ``||q_s - q_t||^2``. The student's map is resized to the teacher's by interpolation first.

Each term has a weight; weight 0 disables it (it is then neither computed nor logged). With several
teachers (an ensemble) the soft target is the average of their softened distributions, and the feature
and attention terms are averaged over teachers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labline.core.errors import ConfigError

TERMS = ("soft", "hard", "feature", "attention")
TEACHER_TERMS = ("soft", "feature", "attention")
OPTIONS = {"soft": ("weight", "temperature"), "hard": ("weight",), "feature": ("weight", "teacher_layer", "student_layer"),
           "attention": ("weight", "teacher_layers", "student_layers", "p")}
KEY = "task.loss_terms"
_RESIZE_MODES = {3: "linear", 4: "bilinear", 5: "trilinear"}


@dataclass
class NetOutputs:
    """What the loss reads from one network on one batch: logits, the tapped feature, the tapped attention layers."""

    logits: torch.Tensor
    feature: torch.Tensor | None = None
    maps: list[torch.Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class TermSpec:
    """The checked ``task.loss_terms``: enabled terms with their weights, and each term's options."""

    weights: dict[str, float]
    temperature: float = 4.0
    teacher_layer: str = ""
    student_layer: str = ""
    teacher_layers: tuple[str, ...] = ()
    student_layers: tuple[str, ...] = ()
    p: float = 2.0

    @property
    def needs_teacher(self) -> bool:
        return any(name in self.weights for name in TEACHER_TERMS)

    @property
    def with_feature(self) -> bool:
        return "feature" in self.weights

    def taps(self, side: str) -> list[str]:
        """Layers of the ``teacher``'s or ``student``'s backbone the enabled terms read: the feature layer first."""
        feature = [getattr(self, f"{side}_layer")] if self.with_feature else []
        return [*feature, *(getattr(self, f"{side}_layers") if "attention" in self.weights else ())]

    def split_taps(self, taps: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Tapped outputs (in ``taps`` order) as the feature and the attention maps."""
        return (taps[0], list(taps[1:])) if self.with_feature else (None, list(taps))


def _positive(value: Any, key: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be a number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def _layers(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, f"must be a list of layer names, got {value!r}", "e.g. [net.0.0, net.0.2] for a cnn backbone")
    return tuple(value)


def parse_terms(loss_terms: Mapping[str, Mapping[str, Any]] | None) -> TermSpec:
    """Check ``task.loss_terms`` and keep the terms whose weight is above 0."""
    loss_terms = loss_terms or {}
    options: dict[str, Any] = {}
    weights: dict[str, float] = {}
    for name, spec in loss_terms.items():
        if name not in TERMS:
            raise ConfigError(f"{KEY}.{name}", "is not a distillation loss term", TERMS)
        spec = spec or {}
        unknown = sorted(set(spec) - set(OPTIONS[name]))
        if unknown:
            raise ConfigError(f"{KEY}.{name}.{unknown[0]}", f"is not an option of the {name} term", OPTIONS[name])
        weight = _positive(spec.get("weight", 0.0), f"{KEY}.{name}.weight", allow_zero=True)
        if weight > 0:
            weights[name] = weight
        if name == "soft" and "temperature" in spec:
            options["temperature"] = _positive(spec["temperature"], f"{KEY}.soft.temperature")
        if name == "attention" and "p" in spec:
            options["p"] = _positive(spec["p"], f"{KEY}.attention.p")
        for layer in ("teacher_layer", "student_layer"):
            if name == "feature" and spec.get(layer) is not None:
                options[layer] = str(spec[layer])
        for layers in ("teacher_layers", "student_layers"):
            if name == "attention" and spec.get(layers) is not None:
                options[layers] = _layers(spec[layers], f"{KEY}.attention.{layers}")
    if not weights:
        raise ConfigError(KEY, "every term has weight 0: nothing to train on", [f"{t}.weight > 0" for t in TERMS])
    spec = TermSpec(weights, **options)
    if "attention" in weights and (not spec.teacher_layers or len(spec.teacher_layers) != len(spec.student_layers)):
        raise ConfigError(f"{KEY}.attention", f"needs as many student_layers as teacher_layers, at least one each; got "
                          f"{list(spec.teacher_layers)} and {list(spec.student_layers)}", "two lists paired in order")
    return spec


def soft_targets(teacher_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """The teachers' distributions at temperature ``T``, averaged: an ensemble gives one soft target."""
    return torch.stack([(z.float() / temperature).softmax(1) for z in teacher_logits]).mean(0)


def soft_target_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(target || softmax(z_s / T))``, per-sample mean.

    Gradients of the softened KL shrink as ``1/T^2``; the factor keeps the soft term's pull comparable with
    the hard term's whatever temperature is chosen, so the two weights keep their meaning.
    """
    log_probs = (student_logits.float() / temperature).log_softmax(1)
    return temperature**2 * F.kl_div(log_probs, target_probs, reduction="batchmean")


def feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean over samples of ||f_s - f_t||^2`` (the student's feature already projected to the teacher's width)."""
    return (student - teacher).pow(2).flatten(1).sum(1).mean()


def attention_map(activation: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``sum_c |A_c|^p``: where the layer is active, whatever its width, so wide and narrow nets compare."""
    return activation.abs().pow(p).sum(1, keepdim=True)


def _resize(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode=_RESIZE_MODES[maps.ndim], align_corners=False)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Per-sample ``||q_s - q_t||^2`` of the normalised attention maps (student resized to the teacher), batch mean."""
    target = attention_map(teacher.float(), p)
    q_s = F.normalize(_resize(attention_map(student.float(), p), target.shape[2:]).flatten(1), dim=1)
    q_t = F.normalize(target.flatten(1), dim=1)
    return (q_s - q_t).pow(2).sum(1).mean()


def projection(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """Identity when the channel widths (dim 1) agree, else a learned map from the student's width to the teacher's:
    linear for feature vectors ``(N, C)``, a 1x1 convolution for maps ``(N, C, ...)``."""
    if len(student_shape) != len(teacher_shape) or len(student_shape) not in (2, 3, 4, 5):
        raise ConfigError(f"{KEY}.feature", f"cannot match a student feature of shape {tuple(student_shape[1:])} with a "
                          f"teacher feature of shape {tuple(teacher_shape[1:])}",
                          "layers whose outputs have the same rank: vectors with vectors, maps with maps")
    c_s, c_t = student_shape[1], teacher_shape[1]
    if c_s == c_t:
        return nn.Identity()
    if len(student_shape) == 2:
        return nn.Linear(c_s, c_t)
    return {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[len(student_shape)](c_s, c_t, kernel_size=1)


class DistillationLoss(nn.Module):
    """The enabled terms and their weighted sum. Owns the feature projections (one per teacher), so they
    train with the student, move with it between devices and are saved in its checkpoint."""

    def __init__(self, spec: TermSpec, student_feature: Sequence[int] | None = None,
                 teacher_features: Sequence[Sequence[int]] = ()):
        super().__init__()
        self.spec = spec
        self.projections = nn.ModuleList()
        if "feature" in spec.weights:
            if student_feature is None or not teacher_features:
                raise ConfigError(f"{KEY}.feature", "needs the feature shapes of the student and of each teacher")
            self.projections.extend(projection(student_feature, t) for t in teacher_features)

    def forward(self, student: NetOutputs, teachers: Sequence[NetOutputs], hard: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Each enabled term, unweighted (``hard`` is the task loss on the true labels, computed by the task)."""
        weights, spec = self.spec.weights, self.spec
        terms: dict[str, torch.Tensor] = {}
        if "soft" in weights:
            target = soft_targets([t.logits for t in teachers], spec.temperature)
            terms["soft"] = soft_target_loss(student.logits, target, spec.temperature)
        if "hard" in weights:
            terms["hard"] = hard
        if "feature" in weights:
            pairs = zip(self.projections, teachers, strict=True)
            terms["feature"] = torch.stack([self._feature(p, student.feature, t.feature) for p, t in pairs]).mean()
        if "attention" in weights:
            terms["attention"] = torch.stack([attention_loss(s, t, spec.p) for teacher in teachers
                                              for s, t in zip(student.maps, teacher.maps, strict=True)]).mean()
        return terms

    @staticmethod
    def _feature(project: nn.Module, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        projected = project(student)
        if projected.ndim > 2:
            projected = _resize(projected, teacher.shape[2:])
        return feature_loss(projected, teacher.float())

    def total(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.spec.weights[name] * value for name, value in terms.items())
