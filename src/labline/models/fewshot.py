"""Few-shot learning tasks: classify queries among ``way`` classes never seen in training, from ``shot`` examples each.

Three methods over any backbone, all evaluated the same way: on the episodes of
``labline.data.episodes`` (validation classes to pick the checkpoint, novel
classes at test), reporting the mean accuracy over the test episodes with its
95% confidence interval and writing every episode's accuracy to an artifact.

- ``PrototypicalNetwork`` (Snell et al. 2017): a class is the mean of its support
  embeddings; queries are scored by negative squared Euclidean distance or by
  scaled cosine similarity to each prototype; trained episodically.
- ``RelationNetwork`` (Sung et al. 2018): a learned relation module scores each
  (class, query) pair in [0, 1]; trained episodically (the paper uses MSE against
  one-hot targets: ``loss=mse``). As in the paper it compares feature maps with a
  conv module when the backbone pools conv maps, else flat vectors with an MLP
  (``labline.models.relation``).
- ``FineTuneBaseline`` (Chen et al. 2019, "A Closer Look at Few-shot Classification"):
  supervised pretraining of backbone + head on all base classes; for each
  evaluation episode the head is discarded and a new logistic regression is fitted
  on the support set's frozen features.

Prototypical and relation networks take no ``head``: their embedding is the backbone's output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from labline.core.errors import ConfigError
from labline.core.io import write_json
from labline.data.episodes import Episode
from labline.losses import labels
from labline.metrics.similarity import cosine_similarity
from labline.models import layers
from labline.models.relation import ConvRelation, MLPRelation, feature_maps, map_layout
from labline.models.task import Task, TaskContext

DISTANCES = ("euclidean", "cosine")
EPISODES_FILE = "fewshot_episodes.json"


def prototypes(embeddings: torch.Tensor, targets: torch.Tensor, way: int) -> torch.Tensor:
    """``(way, D)`` class means of the support embeddings (a one-hot matmul: deterministic on every device)."""
    onehot = labels.onehot(targets, way).to(embeddings.dtype)
    return onehot.T @ embeddings / onehot.sum(0)[:, None]


def prototype_logits(queries: torch.Tensor, protos: torch.Tensor, distance: str, scale: float = 1.0) -> torch.Tensor:
    """``(Q, way)`` scores: ``-||q - p||^2`` (the paper's squared Euclidean) or ``scale * cos(q, p)``.

    Cosines lie in [-1, 1], too flat for a softmax to become confident; ``scale`` sharpens them.
    """
    if distance == "euclidean":
        return -((queries[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
    return scale * cosine_similarity(queries, protos).to(queries.dtype)


def ci95(accuracies: Sequence[float]) -> float:
    """Half-width of the 95% confidence interval of the mean: ``1.96 * std / sqrt(n)`` (population std, as in
    the few-shot literature's evaluation code)."""
    values = np.asarray(accuracies, dtype=np.float64)
    return float(1.96 * values.std() / math.sqrt(len(values)))


class EpisodicTask(Task):
    """What every few-shot method shares: episode scoring at validation and test, the confidence interval
    and the per-episode artifact. A method defines ``scores`` (``(Q, way)``, higher is more likely) and may
    redefine ``score_loss`` and ``training_step``. The backbone embeds; only methods that classify base
    classes (the fine-tuning baseline) build a head."""

    def __init__(self, context: TaskContext, monitor: str, monitor_mode: str, **options: Any):
        super().__init__(context, monitor, monitor_mode, **options)
        self.backbone, self.width = context.backbone()
        self.loss_fn = context.loss()
        self.loss_target = labels.check_encoding(getattr(self.loss_fn, "target", "index"))
        self.test_episodes: list[dict[str, Any]] = []
        self._check_loss()

    def _check_loss(self) -> None:
        """Score dummy 2-class outputs once, so a loss that cannot read class scores fails before training."""
        try:
            with torch.no_grad():
                self.loss_fn(torch.zeros(2, 2), labels.encode(torch.arange(2), self.loss_target, 2))
        except ConfigError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise ConfigError("loss", f"cannot score episode outputs: {' '.join(str(exc).split())}") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def scores(self, episode: Episode) -> torch.Tensor:
        raise NotImplementedError

    def score_loss(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(scores, labels.encode(targets, self.loss_target, scores.shape[1]))

    def _episode(self, episode: Episode, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.scores(episode)
        loss = self.score_loss(scores, episode["query_y"])
        acc = (scores.argmax(1) == episode["query_y"]).float().mean()
        self.log(f"{part}/loss", loss, on_step=False, on_epoch=True, prog_bar=part != "train", batch_size=1)
        self.log(f"{part}/acc", acc, on_step=False, on_epoch=True, prog_bar=part != "train", batch_size=1)
        return loss, acc

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._episode(batch, "train")[0]

    def validation_step(self, episode: Episode, batch_idx: int) -> None:
        self._episode(episode, "val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.test_episodes = []

    def test_step(self, episode: Episode, batch_idx: int) -> None:
        _, acc = self._episode(episode, "test")
        self.test_episodes.append({"accuracy": float(acc), "classes": episode["classes"].tolist(),
                                   "shot": int(episode["support_index"].shape[1]), "query": int(episode["query_index"].shape[1])})

    def on_test_epoch_end(self) -> None:
        accuracies = [e["accuracy"] for e in self.test_episodes]
        self.log("test/acc_ci95", ci95(accuracies))
        self.log("test/episodes", float(len(accuracies)))

    def test_artifacts(self, reports: Path) -> list[Path]:
        """Every test episode's classes and accuracy, so a reader can recompute the mean and interval."""
        accuracies = [e["accuracy"] for e in self.test_episodes]
        path = reports / EPISODES_FILE
        write_json({"method": type(self).__name__, "episodes": len(accuracies), "accuracy": float(np.mean(accuracies)),
                    "ci95": ci95(accuracies), "per_episode": self.test_episodes}, path)
        return [path]

    @staticmethod
    def _split(episode: Episode, embed: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Support and query embeddings from one forward pass (batch norm sees the whole episode, as in training)."""
        n_support = len(episode["support"])
        z = embed(torch.cat([episode["support"], episode["query"]]))
        return z[:n_support], z[n_support:]


class PrototypicalNetwork(EpisodicTask):
    """``distance``: euclidean or cosine; ``scale`` multiplies the cosines (unused for euclidean)."""

    def __init__(self, context: TaskContext, distance: str = "euclidean", scale: float = 10.0, monitor: str = "val/acc",
                 monitor_mode: str = "max"):
        if distance not in DISTANCES:
            raise ConfigError("task.distance", f"unknown distance '{distance}'", DISTANCES)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
            raise ConfigError("task.scale", f"must be a positive number, got {scale!r}", "e.g. 10")
        super().__init__(context, monitor, monitor_mode, distance=distance, scale=scale)
        self.distance, self.scale = distance, float(scale)

    def scores(self, episode: Episode) -> torch.Tensor:
        support, query = self._split(episode, self.backbone)
        way = len(episode["classes"])
        return prototype_logits(query, prototypes(support, episode["support_y"], way), self.distance, self.scale)


class RelationNetwork(EpisodicTask):
    """``hidden``: width of the relation module's fully connected hidden layer.

    With a backbone that globally pools conv maps (cnn, vgg, resnet, mobilenet, conv1d) the relation module is
    the paper's conv module on the concatenated maps of a class and a query (``ConvRelation``); a class's map
    is the mean of its support maps (the paper sums them: the mean keeps the scale the same for every shot).
    A backbone that gives only flat vectors (mlp, vit, recurrent, tcn) falls back to an MLP on concatenated
    vectors (``MLPRelation``), which learns far slower. The backbone's dropout acts on its pooled vector, so it
    does not touch the maps.
    """

    def __init__(self, context: TaskContext, hidden: int = 64, monitor: str = "val/acc", monitor_mode: str = "max"):
        hidden = layers.positive_int(hidden, "task.hidden")
        super().__init__(context, monitor, monitor_mode, hidden=hidden)
        layout, width = map_layout(self.backbone), getattr(self.backbone, "out_features", None)
        if layout is None and not isinstance(width, int):
            raise ConfigError("backbone", "the relation network needs conv feature maps or the backbone's feature width "
                              "(an `out_features` attribute)", "a labline backbone: cnn, vgg, resnet, mlp, ...")
        self.relation = ConvRelation(*layout, hidden) if layout else MLPRelation(width, hidden)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps when the relation module compares maps, else the backbone's output."""
        return feature_maps(self.backbone, x) if isinstance(self.relation, ConvRelation) else self.backbone(x)

    def scores(self, episode: Episode) -> torch.Tensor:
        support, query = self._split(episode, self.embed)
        way = len(episode["classes"])
        classes = prototypes(support.flatten(1), episode["support_y"], way).view(way, *support.shape[1:])
        return self.relation(classes, query)


class FineTuneBaseline(EpisodicTask):
    """Pretrains backbone + ``head`` on the base classes (``task.datamodule.pretrain: true``); each evaluation
    episode fits a logistic regression (inverse regularisation ``C``) on the support features, L2-normalised
    when ``normalize`` (features of unseen classes vary in scale more than in direction)."""

    def __init__(self, context: TaskContext, C: float = 1.0, normalize: bool = True, monitor: str = "val/acc",
                 monitor_mode: str = "max"):
        if isinstance(C, bool) or not isinstance(C, (int, float)) or C <= 0:
            raise ConfigError("task.C", f"must be a positive number, got {C!r}", "e.g. 1.0; larger fits the support set closer")
        super().__init__(context, monitor, monitor_mode, C=C, normalize=normalize)
        self.head = context.head(self.width)
        self.C, self.normalize = float(C), bool(normalize)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.head(self.backbone(x))
        loss = self.loss_fn(logits, labels.encode(y, self.loss_target, self.num_classes))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def scores(self, episode: Episode) -> torch.Tensor:
        """Log-probabilities of the queries under a classifier fitted on this episode's support set alone."""
        from sklearn.linear_model import LogisticRegression

        with torch.no_grad():
            support, query = self._split(episode, self.backbone)
        if self.normalize:
            support, query = F.normalize(support, dim=1), F.normalize(query, dim=1)
        classifier = LogisticRegression(C=self.C, max_iter=1000)
        classifier.fit(support.cpu().double().numpy(), episode["support_y"].cpu().numpy())
        return torch.from_numpy(classifier.predict_log_proba(query.cpu().double().numpy())).to(query)

    def score_loss(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(scores, targets)
