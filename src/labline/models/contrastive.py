"""Contrastive representation learning: backbone -> projection head -> contrastive loss on two views.

The projection head exists for the loss only (Chen et al. 2020 found the layer
before it a better representation): after training it is discarded and the
backbone's features are evaluated, frozen, by two probes fitted on the train
part's clean images and scored on the test part:

- a linear probe: multinomial logistic regression on standardised features
  (``test/linear_probe_acc``, also ``test/acc``);
- k-nearest neighbours by cosine similarity (``test/knn_acc``).

Training and validation minimise the contrastive loss (``val/loss`` picks the
checkpoint); the probes run once, at test.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from labline.core.errors import ConfigError
from labline.data.views import PROBE_EVAL, PROBE_FIT
from labline.losses.contrastive import ContrastiveLoss
from labline.models.task import Task, TaskContext


def linear_probe(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, num_classes: int, c: float = 1.0,
                 max_iter: int = 1000) -> np.ndarray:
    """Class probabilities ``(N, num_classes)`` of test features from logistic regression fitted on train features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter)).fit(train, train_y)
    probs = np.zeros((len(test), num_classes))
    probs[:, probe.classes_] = probe.predict_proba(test)
    return probs


def knn_predict(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, k: int) -> torch.Tensor:
    """Majority label among the ``k`` train features most cosine-similar to each test feature (ties: the nearer)."""
    similarity = F.normalize(test.float(), dim=1) @ F.normalize(train.float(), dim=1).T
    nearest = similarity.topk(min(k, len(train)), dim=1).indices
    votes = F.one_hot(train_y[nearest], int(train_y.max()) + 1).float()
    # Nearer neighbours add a bonus that sums to less than one vote, so it only breaks ties.
    bonus = torch.linspace(1.0, 0.0, nearest.shape[1])[None, :, None] / (nearest.shape[1] + 1)
    return (votes * (1 + bonus)).sum(1).argmax(1)


class ContrastiveTask(Task):
    """Trains backbone + projection head with a contrastive loss; evaluates the frozen backbone by probes."""

    per_sample_predictions = True

    def __init__(self, context: TaskContext, knn_k: int = 5, probe_c: float = 1.0, monitor: str = "val/loss",
                 monitor_mode: str = "min"):
        super().__init__(context, monitor, monitor_mode, knn_k=knn_k, probe_c=probe_c)
        self.backbone, width = context.backbone()
        self.head, self.loss_fn = context.head(width), context.loss()
        if not isinstance(self.loss_fn, ContrastiveLoss):
            raise ConfigError("loss", f"task=contrastive needs a contrastive loss, got {type(self.loss_fn).__name__}",
                              "loss=nt_xent, loss=supcon, loss=triplet")
        if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
            raise ConfigError("task.knn_k", f"must be a positive integer, got {knn_k!r}", "e.g. 5 (scikit-learn's default)")
        if isinstance(probe_c, bool) or not isinstance(probe_c, (int, float)) or probe_c <= 0:
            raise ConfigError("task.probe_c", f"must be > 0, got {probe_c!r}", "e.g. 1.0 (inverse L2 strength)")
        self.knn_k, self.probe_c = knn_k, float(probe_c)
        self.features: dict[int, list[torch.Tensor]] = {}
        self.targets: dict[int, list[torch.Tensor]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The representation kept after training: backbone features, without the projection head."""
        return self.backbone(x).flatten(1)

    def _views_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], part: str) -> torch.Tensor:
        view1, view2, y = batch
        z = self.head(self(torch.cat([view1, view2])))  # one pass: batch norm sees both views together
        loss = self.loss_fn(*z.split(len(y)), y)
        self.log(f"{part}/loss", loss, on_step=False, on_epoch=True, prog_bar=part != "train", batch_size=len(y))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._views_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._views_step(batch, "val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.features, self.targets = {PROBE_FIT: [], PROBE_EVAL: []}, {PROBE_FIT: [], PROBE_EVAL: []}

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        self.features[dataloader_idx].append(self(x).float().cpu())
        self.targets[dataloader_idx].append(y.cpu())

    def on_test_epoch_end(self) -> None:
        train, test = (torch.cat(self.features[i]) for i in (PROBE_FIT, PROBE_EVAL))
        train_y, test_y = (torch.cat(self.targets[i]) for i in (PROBE_FIT, PROBE_EVAL))
        probs = linear_probe(train.numpy(), train_y.numpy(), test.numpy(), self.num_classes, self.probe_c)
        probe_acc = float((probs.argmax(1) == test_y.numpy()).mean())
        knn_acc = float((knn_predict(train, train_y, test, self.knn_k) == test_y).float().mean())
        self.log_dict({"test/acc": probe_acc, "test/linear_probe_acc": probe_acc, "test/knn_acc": knn_acc})
        self.keep_test_predictions(torch.from_numpy(probs), test_y)
