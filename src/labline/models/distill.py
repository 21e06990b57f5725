"""Knowledge distillation: a student classifier trained to match a frozen teacher (or an ensemble of them).

The teacher is named by ``task.teacher``: a Lightning checkpoint of a labline classification run or the
MLflow run id that logged it (the task context's resolver fetches it: models never talk to MLflow). Its
backbone and head are rebuilt from the config stored in the checkpoint (``hyper_parameters["config"]``), so
no teacher architecture is ever repeated in the student's config, then loaded, frozen and kept in eval mode.
The loss terms live in ``labline.losses.distill``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.losses.distill import KEY as TERMS_KEY
from labline.losses.distill import DistillationLoss, NetOutputs, TermSpec, parse_terms
from labline.models.backbone_options import load_weights
from labline.models.checkpoints import CheckpointRef
from labline.models.classification import ClassificationTask, Outputs
from labline.models.parts import build_backbone
from labline.models.task import TaskContext

TEACHER_KEY = "task.teacher"
TEACHER_VALID = (
    "a checkpoint path (relative to the project root) or an MLflow run id of a classification run, or a list; "
    "the distillation pipeline makes one: dvc repro pipelines/distill/dvc.yaml:teacher")
HEAD_PREFIX = "head."


class Classifier(nn.Module):
    """Backbone -> head: the part of a classification checkpoint that makes predictions."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@dataclass
class LoadedClassifier:
    model: Classifier
    config: dict[str, Any]
    num_classes: int
    source: str
    run_id: str | None


def load_classifier(ref: CheckpointRef, shape: Sequence[int], key: str = TEACHER_KEY) -> LoadedClassifier:
    """Rebuild the backbone and head of a labline classification run exactly, from its checkpoint file.

    The backbone's weights go through the same loader as ``backbone.weights``. Anything that does not fit is a
    ``ConfigError`` naming ``key``.
    """
    return _rebuild(ref.path, ref.source, shape, key, ref.run_id)


def _rekeyed(err: ConfigError, source: str, key: str) -> ConfigError:
    """A problem found while rebuilding from ``source``, reported against ``key`` (the user's setting)."""
    return ConfigError(key, f"'{source}': {err.key}: {err.problem}", TEACHER_VALID if key == TEACHER_KEY else err.valid)


def _rebuild(path: Path, source: str, shape: Sequence[int], key: str, run_id: str | None) -> LoadedClassifier:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        hparams, state = saved["hyper_parameters"], saved["state_dict"]
        config, num_classes = hparams["config"], int(hparams["num_classes"])
        target = config["task"]["_target_"]
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(key, f"'{source}' is not a labline classification checkpoint: {reason}", TEACHER_VALID) from None
    task_class = get_object(target)
    if not (isinstance(task_class, type) and issubclass(task_class, ClassificationTask)):
        raise ConfigError(key, f"'{source}' was trained with task {target}, not a classifier", TEACHER_VALID)
    # Its weights come from the checkpoint: the teacher's own starting point, init and freeze are not re-applied.
    backbone_node = OmegaConf.create({**config["backbone"], "weights": None, "init": None, "freeze": False})
    try:
        backbone, width = build_backbone(backbone_node, shape)
        head = instantiate(OmegaConf.create(config["head"]), "head", in_features=width, num_classes=num_classes)
        load_weights(backbone, path)
    except ConfigError as err:
        raise _rekeyed(err, source, key) from None
    head_state = {k.removeprefix(HEAD_PREFIX): v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    try:
        head.load_state_dict(head_state)
    except RuntimeError as exc:
        raise ConfigError(key, f"'{source}': head weights do not fit its head config: {str(exc).splitlines()[0]}") from None
    return LoadedClassifier(Classifier(backbone, head), config, num_classes, source, run_id)


class LayerTaps:
    """Forward hooks keeping the outputs of named submodules (``""`` is the module itself) of the latest pass."""

    def __init__(self, module: nn.Module, names: Sequence[str], key: str):
        modules = dict(module.named_modules())
        for name in names:
            if name not in modules:
                known = [n for n in modules if n][:12]
                raise ConfigError(key, f"no layer '{name}' in {type(module).__name__}", known or ["'' (the whole module)"])
        self.names = list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        for name in dict.fromkeys(self.names):
            modules[name].register_forward_hook(self._keeper(name))

    def _keeper(self, name: str) -> Callable[..., None]:
        def keep(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[name] = output[0] if isinstance(output, tuple) else output

        return keep

    def take(self) -> list[torch.Tensor]:
        """The tapped outputs in the order the names were given; forgotten afterwards."""
        taken = [self.outputs[name] for name in self.names]
        self.outputs.clear()
        return taken


class Teacher:
    """A frozen classifier in eval mode with taps on the layers the loss reads.

    Deliberately not an ``nn.Module`` attribute of the student's task: its weights are not trained, not
    counted as the student's parameters (``model.params``) and not saved in the student's checkpoint.
    """

    def __init__(self, loaded: LoadedClassifier, spec: TermSpec):
        self.loaded, self.spec = loaded, spec
        self.model = loaded.model.eval().requires_grad_(False)
        self.taps = LayerTaps(self.model.backbone, spec.taps("teacher"), f"{TERMS_KEY}: teacher layer")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> NetOutputs:
        logits = self.model(x)
        return NetOutputs(logits, *self.spec.split_taps(self.taps.take()))

    def to(self, device: torch.device) -> Teacher:
        self.model.to(device)
        return self


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _dry_run(run: Callable[[], NetOutputs], who: str) -> NetOutputs:
    try:
        with torch.no_grad():
            return run()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(TEACHER_KEY, f"a dry run of the {who} with the teacher's layers failed: "
                          f"{' '.join(str(exc).split())[:200]}", TEACHER_VALID) from None


class DistillationTask(ClassificationTask):
    """Classification whose training loss is the weighted sum of the enabled distillation terms.

    Validation and test score the hard-label loss only, so ``val/loss`` (early stopping) and ``test/loss``
    read the same as for the same student trained from scratch. Training logs ``train/loss`` (the weighted
    sum) and each enabled term as ``train/loss_<term>``, unweighted.
    """

    def __init__(self, context: TaskContext, teacher: str | Sequence[str] | None = None,
                 loss_terms: Mapping[str, Any] | None = None, monitor: str = "val/acc", monitor_mode: str = "max",
                 top_k: int | None = 5):
        # Plain values before the parent saves the hyperparameters: checkpoints must load with weights_only=True.
        teacher, loss_terms = _plain(teacher), _plain(loss_terms)
        super().__init__(context, monitor, monitor_mode, top_k, teacher=teacher, loss_terms=loss_terms)
        self.spec = spec = parse_terms(loss_terms)
        sources = [teacher] if isinstance(teacher, str) else list(teacher or [])
        if spec.needs_teacher and not sources:
            raise ConfigError(TEACHER_KEY, f"the {', '.join(t for t in spec.weights if t != 'hard')} term(s) need a teacher",
                              TEACHER_VALID)
        shape = context.input_shape
        self.teachers = [self._teacher(context.checkpoint(source, TEACHER_KEY, TEACHER_VALID), shape) for source in sources]
        self.student_taps = LayerTaps(self.backbone, spec.taps("student") if sources else [], f"{TERMS_KEY}: student layer")
        student_feature, teacher_features = self._check_outputs(shape) if sources else (None, [])
        self.distill_loss = DistillationLoss(spec, student_feature, teacher_features)
        self._teacher_outputs: list[NetOutputs] | None = None

    def _teacher(self, ref: CheckpointRef, shape: Sequence[int]) -> Teacher:
        loaded = load_classifier(ref, shape)
        if loaded.num_classes != self.num_classes:
            raise ConfigError(TEACHER_KEY, f"'{ref.source}' predicts {loaded.num_classes} classes, the student's data has "
                              f"{self.num_classes}", "a teacher trained on the same classes")
        return Teacher(loaded, self.spec)

    def _check_outputs(self, shape: Sequence[int]) -> tuple[torch.Size | None, list[torch.Size]]:
        """Run student and teachers once on dummy inputs: every tapped layer exists and fits the terms reading it.
        Returns the feature shapes the projections are built for."""
        x = torch.zeros(2, *shape)
        was_training = self.training
        self.eval()
        try:
            student = _dry_run(lambda: NetOutputs(self(x), *self.spec.split_taps(self.student_taps.take())), "student")
        finally:
            self.train(was_training)
        teachers = [_dry_run(lambda t=t: t(x), f"teacher '{t.loaded.source}'") for t in self.teachers]
        for t, out in zip(self.teachers, teachers, strict=True):
            if not isinstance(out.logits, torch.Tensor) or tuple(out.logits.shape) != (2, self.num_classes):
                raise ConfigError(TEACHER_KEY, f"'{t.loaded.source}' does not output one logit per class",
                                  "a teacher with a single classifier head")
        for who, out in (("student", student), *(("teacher", t) for t in teachers)):
            for m in out.maps:
                if m.ndim < 3:
                    raise ConfigError(f"{TERMS_KEY}.attention.{who}_layers", f"a layer outputs shape {tuple(m.shape[1:])}, "
                                      "not a map", "layers whose outputs are (N, C, ...) activation maps, e.g. conv blocks")
        if not self.spec.with_feature:
            return None, []
        return student.feature.shape, [t.feature.shape for t in teachers]

    def on_fit_start(self) -> None:
        """Bring the teachers to the student's device."""
        for teacher in self.teachers:
            teacher.to(self.device)

    def run_tags(self) -> dict[str, str]:
        """Which teachers the student learnt from (sources as configured, and the runs that made them)."""
        if not self.teachers:
            return {}
        loaded = [t.loaded for t in self.teachers]
        return {"distill.teacher": ", ".join(t.source for t in loaded),
                "distill.teacher_run_id": ", ".join(t.run_id or "unknown" for t in loaded)}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self._teacher_outputs = [teacher(batch[0]) for teacher in self.teachers]
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self._teacher_outputs = None

    def _loss(self, outputs: Outputs, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hard, parts = super()._loss(outputs, y)
        teachers = getattr(self, "_teacher_outputs", None)
        if teachers is None:  # validation, test, the constructor's dry run: the hard-label loss only
            return hard, parts
        logits = outputs[self.head.main] if isinstance(outputs, dict) else outputs
        student = NetOutputs(logits, *self.spec.split_taps(self.student_taps.take()))
        terms = self.distill_loss(student, teachers, hard)
        return self.distill_loss.total(terms), terms
