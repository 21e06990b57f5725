"""Knowledge distillation: a student classifier trained to match a frozen teacher (or an ensemble of them).

The teacher is named by ``task.teacher``: a Lightning checkpoint of a labline classification run or the
MLflow run id that logged it. Its backbone and head are rebuilt from the config stored in the checkpoint
(``hyper_parameters["config"]``), so no teacher architecture is ever repeated in the student's config,
then loaded, frozen and kept in eval mode. The loss terms live in ``labline.losses.distill``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from labline.building import build
from labline.errors import ConfigError
from labline.losses.distill import KEY as TERMS_KEY
from labline.losses.distill import DistillationLoss, NetOutputs, TermSpec, parse_terms
from labline.models.backbone_options import _RUN_ID, _download_checkpoint, load_weights
from labline.models.build import build_backbone
from labline.models.classification import ClassificationTask, Outputs
from labline.paths import workspace_root

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


def input_shape(config: Mapping[str, Any], root: Path | None = None) -> tuple[int, ...]:
    """The shape of one input sample of the data ``config`` trains on (``root``: the project, default the workspace).

    ``build_task`` hands a task its modules but not the input shape, and a teacher cannot be rebuilt
    without it (backbones size their layers from it), so it is read from the processed data itself.
    """
    from labline.data.stages import load_processed

    return tuple(load_processed(OmegaConf.create(dict(config)), root or workspace_root()).x.shape[1:])


def _recorded_run_id(checkpoint: Path) -> str | None:
    """The MLflow run that wrote ``checkpoint``, from the ``run.json`` labline writes next to ``checkpoints/``."""
    record = checkpoint.parent.parent / "run.json"
    if not record.is_file():
        return None
    recorded = json.loads(record.read_text())
    if (record.parent / str(recorded.get("checkpoint", ""))).resolve() != checkpoint.resolve():
        return None
    return recorded.get("run_id")


def _rekeyed(err: ConfigError, source: str, key: str) -> ConfigError:
    """A problem found while rebuilding from ``source``, reported against ``key`` (the user's setting)."""
    return ConfigError(key, f"'{source}': {err.key}: {err.problem}", TEACHER_VALID if key == TEACHER_KEY else err.valid)


def load_classifier(source: str, shape: Sequence[int], key: str = TEACHER_KEY) -> LoadedClassifier:
    """Rebuild the backbone and head of a labline classification run exactly, from its checkpoint.

    ``source`` is a checkpoint file (a relative path is read from the project root, like ``paths.*``, so a
    pipeline stage running in its own folder finds the same file) or an MLflow run id whose ``checkpoints/``
    artifact is fetched from the project's store. The backbone's weights go through the same loader as
    ``backbone.weights``. Anything that does not fit is a ``ConfigError`` naming ``key``.
    """
    if not isinstance(source, str) or not source:
        raise ConfigError(key, f"must be a checkpoint path or a run id, got {source!r}", TEACHER_VALID)
    path = Path(source).expanduser()
    path = path if path.is_absolute() else workspace_root() / path
    if path.is_file():
        return _rebuild(path, source, shape, key, _recorded_run_id(path))
    if not _RUN_ID.fullmatch(source):
        raise ConfigError(key, f"no checkpoint file '{path}'", TEACHER_VALID)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            downloaded = _download_checkpoint(source, Path(tmp))
        except ConfigError as err:
            raise _rekeyed(err, source, key) from None
        return _rebuild(downloaded, source, shape, key, source)


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
        head = build(OmegaConf.create(config["head"]), "head", in_features=width, num_classes=num_classes)
        load_weights(backbone, str(path))
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

    def __init__(self, backbone: nn.Module, head: nn.Module, loss: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None, num_classes: int, config: dict[str, Any] | None = None,
                 teacher: str | Sequence[str] | None = None, loss_terms: Mapping[str, Any] | None = None,
                 monitor: str = "val/acc", monitor_mode: str = "max", top_k: int | None = 5):
        # Plain values before the parent saves the hyperparameters: checkpoints must load with weights_only=True.
        teacher, loss_terms = _plain(teacher), _plain(loss_terms)
        super().__init__(backbone, head, loss, optimizer, scheduler, num_classes, config, monitor, monitor_mode, top_k)
        self.spec = spec = parse_terms(loss_terms)
        sources = [teacher] if isinstance(teacher, str) else list(teacher or [])
        if spec.needs_teacher and not sources:
            raise ConfigError(TEACHER_KEY, f"the {', '.join(t for t in spec.weights if t != 'hard')} term(s) need a teacher",
                              TEACHER_VALID)
        shape = input_shape(config or {}) if sources else ()
        self.teachers = [self._teacher(source, shape, num_classes) for source in sources]
        self.student_taps = LayerTaps(self.backbone, spec.taps("student") if sources else [], f"{TERMS_KEY}: student layer")
        student_feature, teacher_features = self._check_outputs(shape) if sources else (None, [])
        self.distill_loss = DistillationLoss(spec, student_feature, teacher_features)
        self._teacher_outputs: list[NetOutputs] | None = None

    def _teacher(self, source: str, shape: Sequence[int], num_classes: int) -> Teacher:
        loaded = load_classifier(source, shape)
        if loaded.num_classes != num_classes:
            raise ConfigError(TEACHER_KEY, f"'{source}' predicts {loaded.num_classes} classes, the student's data has "
                              f"{num_classes}", "a teacher trained on the same classes")
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
        """Bring the teachers to the student's device; record them on the MLflow run."""
        import mlflow

        for teacher in self.teachers:
            teacher.to(self.device)
        if self.teachers and mlflow.active_run() is not None:
            loaded = [t.loaded for t in self.teachers]
            mlflow.set_tags({"distill.teacher": ", ".join(t.source for t in loaded),
                             "distill.teacher_run_id": ", ".join(t.run_id or "unknown" for t in loaded)})

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
