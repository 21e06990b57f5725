"""Few-shot mechanics: episodes, prototypes, distances, confidence intervals, impossible requests."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.data.class_splits import class_split
from labline.data.episodes import EpisodeDataModule
from labline.data.pipeline import ProcessedData
from labline.losses.torch_loss import TorchLoss
from labline.models.backbones.cnn import CNN
from labline.models.backbones.conv1d import Conv1D
from labline.models.backbones.mlp import MLP
from labline.models.fewshot import FineTuneBaseline, PrototypicalNetwork, RelationNetwork, ci95, prototype_logits, prototypes
from labline.models.relation import ConvRelation, MLPRelation, feature_maps
from labline.models.task import TaskContext
from labline.runs.assembly import prepare_run

CLASSES, PER_CLASS = 30, 8


def _data(parts: dict[str, np.ndarray] | None = None) -> ProcessedData:
    y = np.repeat(np.arange(CLASSES), PER_CLASS)
    x = np.random.default_rng(0).normal(size=(len(y), 1, 4, 4)).astype(np.float32)
    parts = parts if parts is not None else class_split(y, val=5, novel=7, seed=0)
    return ProcessedData(x, y, [f"c{i}" for i in range(CLASSES)], parts, "fp", "md5")


def _module(**kwargs) -> EpisodeDataModule:
    options = {"way": 5, "shot": 2, "query": 3, "train_episodes": 6, "val_episodes": 4, "test_episodes": 10} | kwargs
    return EpisodeDataModule(_data(), seed=0, **options)


def _episodes(dm: EpisodeDataModule, part: str) -> list[dict[str, torch.Tensor]]:
    return list(getattr(dm, f"{part}_dataloader")())


@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_episodes_hold_way_classes_of_shot_plus_query_without_overlap(part: str) -> None:
    dm = _module()
    y, allowed = dm.data.y, set(np.unique(dm.data.y[dm.data.parts[part]]).tolist())
    episodes = _episodes(dm, part)
    assert len(episodes) == dm.episodes[part]
    for ep in episodes:
        assert ep["support"].shape == (5 * 2, 1, 4, 4) and ep["query"].shape == (5 * 3, 1, 4, 4)
        classes = ep["classes"].tolist()
        assert len(set(classes)) == 5 and set(classes) <= allowed
        support, query = ep["support_index"].numpy(), ep["query_index"].numpy()
        assert not set(support.ravel()) & set(query.ravel())
        assert len(set(support.ravel()) | set(query.ravel())) == 5 * (2 + 3)
        for local, cls in enumerate(classes):
            assert (y[support[local]] == cls).all() and (y[query[local]] == cls).all()
        assert torch.equal(ep["support_y"], torch.arange(5).repeat_interleave(2))
        assert torch.equal(ep["query_y"], torch.arange(5).repeat_interleave(3))
        assert torch.equal(ep["support"], torch.from_numpy(dm.data.x[support.ravel()]))


def test_base_classes_train_novel_classes_test_and_they_never_meet() -> None:
    dm = _module()
    seen = {part: {c for ep in _episodes(dm, part) for c in ep["classes"].tolist()} for part in ("train", "val", "test")}
    assert seen["train"] <= set(dm.part_classes["train"].tolist())
    assert seen["test"] <= set(dm.part_classes["test"].tolist())
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["val"] and not seen["val"] & seen["test"]


def test_training_episodes_change_per_epoch_evaluation_episodes_do_not() -> None:
    dm = _module()
    loader = dm.train_dataloader()
    first = [ep["query_index"] for ep in loader]
    loader.sampler.set_epoch(1)
    second = [ep["query_index"] for ep in loader]
    loader.sampler.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, [ep["query_index"] for ep in loader], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    tests = [[ep["query_index"] for ep in dm.test_dataloader()] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*tests, strict=True))


def test_wider_training_episodes() -> None:
    ep = _episodes(_module(train_way=8, train_query=1), "train")[0]
    assert len(ep["classes"]) == 8 and len(ep["query"]) == 8
    assert len(_episodes(_module(train_way=8, train_query=1), "test")[0]["classes"]) == 5


def test_pretraining_batches_cover_base_classes_with_local_labels() -> None:
    dm = _module(pretrain=True)
    x, y = next(iter(dm.train_dataloader()))
    assert dm.num_classes == len(dm.part_classes["train"]) == CLASSES - 12
    assert y.min() >= 0 and y.max() < dm.num_classes
    seen = torch.cat([batch[1] for batch in dm.train_dataloader()])
    assert len(seen) == len(dm.data.parts["train"])


@pytest.mark.parametrize(("kwargs", "key", "needle"), [
    ({"way": 6}, "task.datamodule.way", "the val part has 5 (validation classes)"),
    ({"train_way": 19}, "task.datamodule.train_way", "18 (base classes)"),
    ({"shot": 5, "query": 4}, "task.datamodule.query", "need 9 samples per class"),
    ({"shot": 9, "query": 1}, "task.datamodule.shot", "has 8"),
    ({"train_query": 7}, "task.datamodule.train_query", "train_query <= 8"),
    ({"way": 1}, "task.datamodule.way", ">= 2"),
    ({"test_episodes": 0}, "task.datamodule.test_episodes", ">= 1"),
])
def test_impossible_requests_are_one_line_errors_naming_the_key(kwargs: dict, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _module(**kwargs)
    assert info.value.key == key and needle in str(info.value) and "\n" not in str(info.value)


def test_parts_sharing_classes_are_refused() -> None:
    y = np.repeat(np.arange(CLASSES), PER_CLASS)
    shared = {"train": np.arange(0, len(y), 2), "val": np.arange(1, len(y), 4), "test": np.arange(3, len(y), 4)}
    with pytest.raises(ConfigError, match="must not share classes") as info:
        EpisodeDataModule(_data(shared))
    assert info.value.key == "split" and "split=classes" in str(info.value)


def test_impossible_request_fails_before_the_run(compose, tmp_path) -> None:
    cfg = compose("experiment=fewshot_protonet_glyphs", "data.source.classes=16", "data.source.size=16", "split.val=6",
                  "threads=1")
    with pytest.raises(ConfigError) as info:
        prepare_run(cfg, tmp_path, tmp_path)
    assert str(info.value).startswith("task.datamodule.way: 5-way episodes need 5 classes, but the test part has 4 (novel")


def test_prototypes_are_class_means_of_support_embeddings() -> None:
    z = torch.randn(12, 6)
    targets = torch.tensor([2, 0, 1, 2, 0, 1, 1, 2, 0, 0, 1, 2])
    expected = torch.stack([z[targets == c].mean(0) for c in range(3)])
    assert torch.allclose(prototypes(z, targets, 3), expected, atol=1e-6)


def test_euclidean_and_cosine_scores_and_where_they_disagree() -> None:
    protos = torch.tensor([[1.0, 0.0], [9.0, 3.0]])
    query = torch.tensor([[10.0, 0.0]])
    euclidean = prototype_logits(query, protos, "euclidean")
    assert torch.allclose(euclidean, torch.tensor([[-81.0, -10.0]]))
    cosine = prototype_logits(query, protos, "cosine", scale=1.0)
    assert torch.allclose(cosine, torch.tensor([[1.0, 9.0 / 90.0**0.5]]), atol=1e-6)
    assert euclidean.argmax().item() == 1 and cosine.argmax().item() == 0
    known = prototype_logits(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[4.0, 5.0, 6.0]]), "cosine", scale=10.0)
    assert known.item() == pytest.approx(9.746, abs=1e-3)


def test_ci95_on_fixed_numbers() -> None:
    assert ci95([1.0, 0.0, 1.0, 0.0]) == pytest.approx(1.96 * 0.5 / 2)
    assert ci95([0.8] * 600) == 0.0
    values = np.linspace(0.6, 1.0, 600)
    assert ci95(values) == pytest.approx(1.96 * values.std() / np.sqrt(600))


def _parts(**extra):
    """The task's keyword arguments: a context over hand-built parts, and the method's options."""
    loss = extra.pop("loss", TorchLoss("torch.nn.CrossEntropyLoss"))
    backbone = extra.pop("backbone", None)
    if backbone is None:
        backbone = nn.Flatten()
        backbone.out_features = 16
    context = TaskContext.of_parts((1, 4, 4), 3, config=extra.pop("config", None), backbone=backbone,
                                   head=nn.Linear(16, 3), loss=loss, optimizer=partial(torch.optim.Adam, lr=1e-3))
    return {"context": context, **extra}


def _episode(way: int = 3, shot: int = 2, query: int = 4) -> dict[str, torch.Tensor]:
    centres = torch.randn(way, 1, 4, 4) * 5
    support_y, query_y = torch.arange(way).repeat_interleave(shot), torch.arange(way).repeat_interleave(query)
    return {"support": centres[support_y] + 0.1 * torch.randn(way * shot, 1, 4, 4),
            "query": centres[query_y] + 0.1 * torch.randn(way * query, 1, 4, 4), "support_y": support_y, "query_y": query_y,
            "classes": torch.tensor([7, 3, 11, 2, 5][:way])}


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_protonet_scores_queries_against_support_means(distance: str) -> None:
    torch.manual_seed(0)
    net, ep = PrototypicalNetwork(**_parts(distance=distance)), _episode()
    protos = prototypes(ep["support"].flatten(1), ep["support_y"], 3)
    assert torch.allclose(net.scores(ep), prototype_logits(ep["query"].flatten(1), protos, distance, 10.0), atol=1e-5)
    assert (net.scores(ep).argmax(1) == ep["query_y"]).all()


def _relation(backbone: str = "cnn", **extra) -> RelationNetwork:
    """A relation network over a tiny real backbone on 1 x 4 x 4 inputs: 2-D maps (cnn), 1-D maps (conv1d), flat (mlp)."""
    torch.manual_seed(0)
    backbones = {"cnn": lambda: CNN([1, 4, 4], channels=[8, 8], dropout=0.0),
                 "conv1d": lambda: Conv1D([1, 4, 4], channels=[8, 8]), "mlp": lambda: MLP([1, 4, 4], hidden=[8])}
    return RelationNetwork(**_parts(loss=TorchLoss("torch.nn.MSELoss", target="onehot"), hidden=8,
                                    backbone=backbones[backbone](), **extra))


@pytest.mark.parametrize(("backbone", "module", "maps"), [("cnn", ConvRelation, (8, 2, 2)), ("conv1d", ConvRelation, (8, 2)),
                                                          ("mlp", MLPRelation, (8,))])
@pytest.mark.parametrize("way", [3, 5])
def test_relation_scores_one_relation_in_unit_interval_per_query_and_class(backbone: str, module: type, maps: tuple,
                                                                            way: int) -> None:
    net, ep = _relation(backbone), _episode(way=way, shot=2, query=4)
    assert isinstance(net.relation, module) and net.embed(ep["query"]).shape == (len(ep["query"]), *maps)
    scores = net.scores(ep)
    assert scores.shape == (len(ep["query"]), way) and (scores >= 0).all() and (scores <= 1).all()
    net.score_loss(scores, ep["query_y"]).backward()
    assert all(p.grad is not None for p in net.relation.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.parameters())


def test_feature_maps_are_what_the_backbone_pools() -> None:
    net, x = _relation(), torch.randn(6, 1, 4, 4)
    net.eval()
    maps = feature_maps(net.backbone, x)
    assert torch.allclose(maps.flatten(2).mean(-1), net.backbone(x), atol=1e-6)
    assert not net.backbone.net[1]._forward_hooks
    with pytest.raises(ValueError, match="no GlobalAvgPool"):
        feature_maps(nn.Flatten(), x)


@pytest.mark.parametrize("backbone", ["cnn", "mlp"])
def test_relation_scores_ignore_the_order_of_the_support_set(backbone: str) -> None:
    net, ep = _relation(backbone), _episode(way=3, shot=3, query=4)
    net.eval()
    order = torch.randperm(len(ep["support"]), generator=torch.Generator().manual_seed(1))
    shuffled = ep | {"support": ep["support"][order], "support_y": ep["support_y"][order]}
    assert not torch.equal(shuffled["support_y"], ep["support_y"])
    assert torch.allclose(net.scores(ep), net.scores(shuffled), atol=1e-6)


def test_relation_network_learns_an_episode_in_a_few_steps() -> None:
    net, ep = _relation(), _episode(way=3, shot=2, query=4)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = net.score_loss(net.scores(ep), ep["query_y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    net.eval()
    assert (net.scores(ep).argmax(1) == ep["query_y"]).float().mean() >= 0.75


def test_finetune_fits_a_new_classifier_per_support_set() -> None:
    torch.manual_seed(0)
    net, ep = FineTuneBaseline(**_parts(C=10.0)), _episode()
    log_probs = net.scores(ep)
    assert log_probs.shape == (12, 3) and torch.allclose(log_probs.exp().sum(1), torch.ones(12, dtype=log_probs.dtype))
    assert (log_probs.argmax(1) == ep["query_y"]).all()
    x, y = torch.randn(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    assert net.training_step((x, y), 0).requires_grad


@pytest.mark.parametrize(("cls", "kwargs", "key"), [(PrototypicalNetwork, {"distance": "manhattan"}, "task.distance"),
                                                     (PrototypicalNetwork, {"scale": 0}, "task.scale"),
                                                     (RelationNetwork, {"hidden": 0}, "task.hidden"),
                                                     (FineTuneBaseline, {"C": -1.0}, "task.C")])
def test_bad_method_options_name_the_key(cls, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**_parts(**kwargs))
    assert info.value.key == key


def test_hyperparameters_hold_options_not_modules() -> None:
    net = PrototypicalNetwork(**_parts(distance="cosine", config={"seed": 0}))
    assert dict(net.hparams) == {"num_classes": 3, "config": {"seed": 0}, "distance": "cosine", "scale": 10.0,
                                 "monitor": "val/acc", "monitor_mode": "max"}
