"""Zero-shot classification from class descriptions: direct attribute prediction and a compatibility model.

The head maps backbone features to a class description's width (``num_classes``
of the zero-shot datamodule is that width); a class is then chosen by comparing
the output with every candidate class's description, so classes never trained
on can be predicted:

- ``dap`` (Lampert et al. 2009/2014): the head predicts each attribute
  independently (sigmoid, trained with a loss on attribute vectors such as
  ``loss=bce``); a class scores ``sum_m log p(a_m = a_m^c | x) - log p(a_m = a_m^c)``,
  the likelihood of its attribute combination over the attribute priors of the
  seen classes;
- ``compat`` (DeViSE-style, Frome et al. 2013): the head embeds the image in the
  description space; a class scores ``cos(embedding, description) / temperature``,
  trained with a classification loss over the seen classes. The description space
  is attribute vectors or sentence embeddings of text descriptions (DAP needs
  attributes).

Evaluation follows Xian et al. (2017): per-class mean top-1 accuracy. ZSL
(``test/acc``) ranks unseen test images among unseen classes only; generalised
ZSL ranks every test image among all classes and reports seen and unseen
accuracy and their harmonic mean. ``calibration`` (calibrated stacking, Chao et
al. 2016) subtracts a constant from seen classes' scores in GZSL, countering
the bias towards classes seen in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labline.core.errors import ConfigError
from labline.core.io import write_json
from labline.data.zeroshot import ZeroShotDataModule
from labline.losses import labels
from labline.metrics.similarity import cosine_similarity
from labline.models.task import Task, TaskContext

METHODS = ("dap", "compat")
VECTOR_TARGETS = ("multihot", "soft")
# Attribute priors are clamped away from 0 and 1: an attribute constant over the seen classes would divide by 0.
PRIOR_FLOOR = 1e-3


def harmonic_mean(seen: float, unseen: float) -> float:
    """``2 s u / (s + u)``: high only when both seen and unseen classes are recognised (0 when both are 0)."""
    return 0.0 if seen + unseen == 0 else 2.0 * seen * unseen / (seen + unseen)


def per_class_accuracy(predicted: torch.Tensor, targets: torch.Tensor) -> dict[int, float]:
    """Top-1 accuracy of each class present in ``targets``."""
    return {int(c): float((predicted[targets == c] == c).float().mean()) for c in targets.unique()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def dap_scores(attribute_logits: torch.Tensor, descriptions: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` attribute logits -> ``(N, C)`` class log-scores ``sum_m log p(a_m^c | x) / p(a_m^c)``."""
    a = descriptions.to(attribute_logits.dtype)
    likelihood = F.logsigmoid(attribute_logits) @ a.T + F.logsigmoid(-attribute_logits) @ (1 - a).T
    return likelihood - (a @ prior.log() + (1 - a) @ (1 - prior).log())


def zero_shot_metrics(scores: torch.Tensor, targets: torch.Tensor, unseen: torch.Tensor) -> tuple[dict[str, float], dict]:
    """ZSL accuracy (``acc``) and GZSL ``gzsl_seen`` / ``gzsl_unseen`` / ``gzsl_h`` from ``(N, C)`` class scores.

    ``unseen`` is a boolean mask over classes. Also returns each class's ZSL and GZSL accuracy.
    """
    on_unseen = unseen[targets]
    unseen_ids = unseen.nonzero().flatten()
    zsl_predicted = unseen_ids[scores[on_unseen][:, unseen_ids].argmax(1)]
    zsl = per_class_accuracy(zsl_predicted, targets[on_unseen])
    gzsl = per_class_accuracy(scores.argmax(1), targets)
    seen_acc = [acc for c, acc in gzsl.items() if not unseen[c]]
    unseen_acc = [acc for c, acc in gzsl.items() if unseen[c]]
    s, u = _mean(seen_acc), _mean(unseen_acc)
    metrics = {"acc": _mean(list(zsl.values())), "gzsl_seen": s, "gzsl_unseen": u, "gzsl_h": harmonic_mean(s, u)}
    return metrics, {"zsl": zsl, "gzsl": gzsl}


class ZeroShotTask(Task):
    """Backbone -> head -> class description; trained on seen classes, tested on unseen (ZSL) and all (GZSL).

    Validation uses seen classes only (``val/acc`` ranks seen images among seen classes): choosing a
    checkpoint by unseen classes would tune on the test classes. Class descriptions come from the
    datamodule at ``setup``; they are buffers outside the state dict, so a checkpoint holds only weights.
    """

    per_sample_predictions = True

    def __init__(self, context: TaskContext, method: str = "compat", temperature: float = 0.1, calibration: float = 0.0,
                 monitor: str = "val/acc", monitor_mode: str = "max"):
        super().__init__(context, monitor, monitor_mode, method=method, temperature=temperature, calibration=calibration)
        self.backbone, features = context.backbone()
        head, loss = context.head(features), context.loss()
        num_classes = self.num_classes
        if method not in METHODS:
            raise ConfigError("task.method", f"unknown method '{method}'", METHODS)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ConfigError("task.temperature", f"must be > 0, got {temperature!r}", "e.g. 0.1")
        if isinstance(calibration, bool) or not isinstance(calibration, (int, float)):
            raise ConfigError("task.calibration", f"must be a number, got {calibration!r}", "0 (none) or a score offset")
        width = getattr(head, "out_features", num_classes)
        if width != num_classes:
            raise ConfigError("head", f"outputs {width} values; a zero-shot head outputs one per attribute ({num_classes})",
                              "head=linear or head=mlp")
        self.loss_target = labels.check_encoding(getattr(loss, "target", "index"))
        if method == "dap" and self.loss_target not in VECTOR_TARGETS:
            raise ConfigError("loss", "method dap predicts attributes: its loss compares attribute vectors", "loss=bce")
        self.head, self.loss_fn = head, loss
        self.method, self.temperature, self.calibration = method, float(temperature), float(calibration)
        self.report: dict[str, Any] = {}

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, ZeroShotDataModule):
            raise ConfigError("task.datamodule", "task=zeroshot needs class descriptions and a seen/unseen split",
                              "labline.data.zeroshot.ZeroShotDataModule")
        zero_shot = datamodule.zero_shot
        descriptions = torch.from_numpy(zero_shot.descriptions).float()
        if self.method == "dap" and (descriptions.min() < 0 or descriptions.max() > 1):
            raise ConfigError("task.datamodule.class_attributes", "method dap needs attribute values in [0, 1]",
                              "binary or probability attributes, or task.method=compat")
        seen = torch.from_numpy(zero_shot.seen)
        position = torch.full((len(descriptions),), -1, dtype=torch.long)
        position[seen] = torch.arange(len(seen))
        self.class_names = zero_shot.classes
        self.class_texts = zero_shot.texts
        self.register_buffer("descriptions", descriptions, persistent=False)
        self.register_buffer("seen", seen, persistent=False)
        self.register_buffer("seen_position", position, persistent=False)
        self.register_buffer("prior", descriptions[seen].mean(0).clamp(PRIOR_FLOOR, 1 - PRIOR_FLOOR), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def class_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` scores of every class, seen or not, from the head's outputs."""
        if self.method == "dap":
            return dap_scores(outputs, self.descriptions, self.prior)
        return cosine_similarity(outputs, self.descriptions) / self.temperature

    def _seen_step(self, batch: tuple[torch.Tensor, torch.Tensor], part: str) -> torch.Tensor:
        """Loss and accuracy among the seen classes (training and validation never meet an unseen class)."""
        x, y = batch
        outputs = self(x)
        scores = self.class_scores(outputs)[:, self.seen]
        if self.method == "dap":
            loss = self.loss_fn(outputs, self.descriptions[y])
        else:
            loss = self.loss_fn(scores, labels.encode(self.seen_position[y], self.loss_target, len(self.seen)))
        accuracy = (self.seen[scores.argmax(1)] == y).float().mean()
        self.log(f"{part}/loss", loss, on_step=False, on_epoch=True, prog_bar=part != "train", batch_size=len(y))
        self.log(f"{part}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=part != "train", batch_size=len(y))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._seen_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._seen_step(batch, "val")


    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        scores = self.class_scores(self(x)).float()
        scores[:, self.seen] -= self.calibration
        self.keep_test_predictions(scores.softmax(1), y)

    def on_test_epoch_end(self) -> None:
        unseen = torch.ones(len(self.class_names), dtype=torch.bool)
        unseen[self.seen.cpu()] = False
        probs, targets = self.test_probabilities()
        metrics, per_class = zero_shot_metrics(torch.from_numpy(probs), torch.from_numpy(targets), unseen)
        for name, value in metrics.items():
            self.log(f"test/{name}", value)
        self.report = {"method": self.method, "metrics": metrics, "classes": self.class_names,
                       "seen": [self.class_names[c] for c in self.seen.tolist()],
                       "unseen": [self.class_names[c] for c in unseen.nonzero().flatten().tolist()],
                       "per_class": {kind: {self.class_names[c]: acc for c, acc in accs.items()}
                                     for kind, accs in per_class.items()}}
        if self.class_texts is not None:
            self.report["texts"] = dict(zip(self.class_names, self.class_texts, strict=True))

    def test_artifacts(self, reports_dir: Path) -> list[Path]:
        """Which classes were unseen, each class's ZSL and GZSL accuracy, and the sentences of text descriptions."""
        path = Path(reports_dir) / "zeroshot.json"
        write_json(self.report, path)
        return [path]
