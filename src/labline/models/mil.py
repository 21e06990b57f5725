"""Multiple-instance learning: an instance encoder (any backbone), a permutation-invariant pooling head, a bag label.

The pooling heads are ``head`` options (``head=mil_mean|mil_max|mil_attention|mil_gated_attention``):
each reduces a bag's instance features to one bag feature and classifies it, and reports
one weight per instance (summing to 1) saying how much the instance shaped the bag's
feature. Attention pooling (Ilse et al. 2018) learns these weights; for mean pooling
they are uniform, for max pooling each instance's share of the feature maxima.

Bags in a batch are padded to the largest (``labline.data.bags.collate_bags``); padded
positions are masked out of every pooling, so a bag's output never depends on its
batch-mates or on the order of its instances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score

from labline.core.errors import ConfigError
from labline.core.io import write_json
from labline.losses import labels
from labline.models.layers import check_dropout, positive_int
from labline.models.task import Task, TaskContext

POOLING_HEADS = ("mil_mean", "mil_max", "mil_attention", "mil_gated_attention")


class BagPooling(nn.Module):
    """Pool instance features ``(B, N, D)`` under a mask ``(B, N)`` into bag features, then a linear classifier."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(check_dropout(dropout, "head.dropout"))
        self.fc = nn.Linear(in_features, num_classes)
        self.out_features = num_classes

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(bag features (B, D), instance weights (B, N))``; padded instances get weight 0."""
        raise NotImplementedError

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bag, weights = self.pool(h, mask)
        return self.fc(self.drop(bag)), weights


class MeanPooling(BagPooling):
    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = mask.float() / mask.sum(1, keepdim=True)
        return (weights.unsqueeze(-1) * h).sum(1), weights


class MaxPooling(BagPooling):
    """Feature-wise maximum; an instance's weight is the share of feature dimensions whose maximum it holds."""

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bag = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        holds = ((h == bag.unsqueeze(1)) & mask.unsqueeze(-1)).float().sum(-1)
        return bag, holds / holds.sum(1, keepdim=True)


class AttentionPooling(BagPooling):
    """``a_k = softmax_k(w^T tanh(V h_k))``, bag feature ``sum_k a_k h_k`` (Ilse et al. 2018, eq. 9)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, dropout: float = 0.0):
        super().__init__(in_features, num_classes, dropout)
        self.V = nn.Linear(in_features, positive_int(hidden, "head.hidden"))
        self.w = nn.Linear(hidden, 1)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(torch.tanh(self.V(h))).squeeze(-1)

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.scores(h).masked_fill(~mask, float("-inf")).softmax(1)
        return (weights.unsqueeze(-1) * h).sum(1), weights


class GatedAttentionPooling(AttentionPooling):
    """``a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k)))`` (Ilse et al. 2018, eq. 10): the sigmoid gate lifts
    tanh's near-linearity for small inputs."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, dropout: float = 0.0):
        super().__init__(in_features, num_classes, hidden, dropout)
        self.U = nn.Linear(in_features, hidden)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)


def bag_metrics(num_classes: int) -> MetricCollection:
    """Bag accuracy, macro F1 and macro one-vs-rest ROC-AUC (for two classes: the AUC of the positive class)."""
    return MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro"),
                             "f1_macro": MulticlassF1Score(num_classes, average="macro"),
                             "auc": MulticlassAUROC(num_classes, average="macro")})


class MILTask(Task):
    """Bag classification: the backbone encodes every instance, the pooling head makes the bag's prediction.

    ``examples`` test bags are drawn with their instances ranked by weight (``attention_bags.png``);
    every test bag's weights go to ``attention.json``. Bag probabilities are exposed like any classifier's
    (``test_probabilities``, in the order of the part's bags), so a MIL run records the bag confusion
    matrix and ``predictions/{val,test}.npz`` (indexed by bag id) and can join ensembles.

    Prefer an encoder without batch norm: with few bags per batch, batch statistics are those of the bag
    itself, which evaluation never sees.
    """

    per_sample_predictions = True

    def __init__(self, context: TaskContext, monitor: str = "val/auc", monitor_mode: str = "max", examples: int = 4):
        super().__init__(context, monitor, monitor_mode, examples=examples)
        self.backbone, width = context.backbone()
        self.head, self.loss_fn = context.head(width), context.loss()
        if not isinstance(self.head, BagPooling):
            raise ConfigError("head", f"{type(self.head).__name__} does not pool a bag of instances", POOLING_HEADS)
        self.examples = positive_int(examples, "task.examples")
        self.loss_target = labels.check_encoding(getattr(self.loss_fn, "target", "index"))
        self.metrics = nn.ModuleDict({f"{part}_metrics": bag_metrics(self.num_classes).clone(prefix=f"{part}/")
                                      for part in ("train", "val", "test")})
        self.test_outputs: list[dict[str, Any]] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, K), instance weights (B, N))`` for padded bags ``x`` (B, N, ...); without a mask,
        ``x`` (N, ...) is one bag."""
        if mask is None:
            x, mask = x.unsqueeze(0), torch.ones(1, len(x), dtype=torch.bool, device=x.device)
        features = self.backbone(x[mask]).flatten(1)
        h = features.new_zeros(*mask.shape, features.shape[1]).masked_scatter(mask.unsqueeze(-1), features)
        return self.head(h, mask)

    def _step(self, batch: dict[str, torch.Tensor], part: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, weights = self(batch["x"], batch["mask"])
        y = batch["y"]
        loss = self.loss_fn(logits, labels.encode(y, self.loss_target, logits.shape[1]))
        probs = logits.detach().float().softmax(-1)
        self.metrics[f"{part}_metrics"].update(probs, y)
        self.log(f"{part}/loss", loss, on_step=False, on_epoch=True, prog_bar=part != "train", batch_size=len(y))
        self.log_dict(self.metrics[f"{part}_metrics"], on_step=False, on_epoch=True, batch_size=len(y))
        return loss, probs, weights

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.test_outputs = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, probs, weights = self._step(batch, "test")
        self.keep_test_predictions(probs, batch["y"])
        for row in range(len(probs)):
            self.test_outputs.append({"bag": int(batch["bag"][row]), "label": int(batch["y"][row]),
                                      "probs": probs[row].cpu().numpy(),
                                      "weights": weights[row][batch["mask"][row]].detach().cpu().numpy()})

    def test_artifacts(self, reports: Path) -> list[Path]:
        """Per-bag predictions with their instances' weights (JSON) and the ranked-instance figure."""
        dm = self.trainer.datamodule
        bags, data = dm.parts["test"], dm.data
        records = []
        for out in self.test_outputs:
            members = bags.members[out["bag"]]
            order = np.argsort(-out["weights"], kind="stable")
            records.append({"bag": bags.ids[out["bag"]], "label": dm.classes[out["label"]],
                            "predicted": dm.classes[int(out["probs"].argmax())], "probs": out["probs"].round(6).tolist(),
                            "instances": [{"index": int(members[k]), "class": data.classes[int(data.y[members[k]])],
                                           "weight": round(float(out["weights"][k]), 6)} for k in order]})
        write_json(records, reports / "attention.json")
        return [reports / "attention.json",
                ranked_bags_figure(records, data.x, dm.classes[-1], self.examples, reports / "attention_bags.png")]


def _pick_examples(records: list[dict[str, Any]], positive: str, count: int) -> list[dict[str, Any]]:
    """Half the figure from bags of class ``positive`` (for target bags: those holding the target), then the others."""
    chosen = [r for r in records if r["label"] == positive]
    others = [r for r in records if r["label"] != positive]
    half = min(len(chosen), max(1, count // 2))
    return chosen[:half] + others[:count - half]


def ranked_bags_figure(records: list[dict[str, Any]], x: np.ndarray, positive: str, count: int, path: Path) -> Path:
    """One row per bag: its instances in decreasing weight, each titled with its weight and instance class."""
    import matplotlib.pyplot as plt

    chosen = _pick_examples(records, positive, max(1, count))
    width = max(len(r["instances"]) for r in chosen)
    fig, axes = plt.subplots(len(chosen), width, figsize=(1.1 * width + 1, 1.35 * len(chosen) + 0.3), squeeze=False)
    for row, record in zip(axes, chosen, strict=False):
        for ax, instance in zip(row, record["instances"], strict=False):
            image = x[instance["index"]]
            if image.ndim == 3 and image.shape[0] in (1, 3):
                ax.imshow(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1), cmap="gray")
            else:
                ax.plot(image.reshape(-1), lw=0.8)
            ax.set_title(f"{instance['weight']:.2f} ({instance['class']})", fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        row[0].set_ylabel(f"{record['bag']}\n{record['label']}\n-> {record['predicted']}", fontsize=7, rotation=0,
                          ha="right", va="center")
    fig.suptitle("test bags: instances ranked by weight (weight, instance class)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
