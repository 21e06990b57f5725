"""Multiple-instance learning: permutation-invariant pooling, the bag label rule, and bags that respect the split."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.data.bags import BagDataModule, BagFile, BagSize, TargetBags, bag_holdout, collate_bags
from labline.data.pipeline import ProcessedData, load_processed
from labline.models.backbones.mlp import MLP
from labline.models.heads.linear import LinearHead
from labline.models.mil import POOLING_HEADS, MILTask
from labline.models.task import TaskContext, build_task
from testroot import CONF, ROOT

INSTANCE = (1, 4, 4)


def _task(head: torch.nn.Module) -> MILTask:
    torch.manual_seed(0)
    backbone = MLP(INSTANCE, hidden=[16], dropout=0.0, norm="none")
    context = TaskContext.of_parts(INSTANCE, 2, backbone=backbone, head=head, loss=torch.nn.CrossEntropyLoss(),
                                   optimizer=partial(torch.optim.Adam, lr=1e-3))
    return MILTask(context).eval()


def _heads() -> dict[str, torch.nn.Module]:
    """Every pooling option, built from its YAML in conf/head/."""
    torch.manual_seed(0)
    return {name: instantiate(OmegaConf.load(CONF / "head" / f"{name}.yaml"), "head", in_features=16, num_classes=2)
            for name in POOLING_HEADS}


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three bags of 5, 2 and 4 instances, padded to 5."""
    generator = torch.Generator().manual_seed(1)
    bags = [torch.randn(n, *INSTANCE, generator=generator) for n in (5, 2, 4)]
    batch = collate_bags([(b, 0, i) for i, b in enumerate(bags)])
    return batch["x"], batch["mask"]


@pytest.mark.parametrize("name", POOLING_HEADS)
def test_shuffling_a_bag_leaves_its_output_unchanged(name: str) -> None:
    task = _task(_heads()[name])
    x, mask = _padded_batch()
    with torch.no_grad():
        logits, weights = task(x, mask)
        generator = torch.Generator().manual_seed(2)
        # Shuffle every bag's positions, padding included: only the set of instances may matter.
        perms = torch.stack([torch.randperm(x.shape[1], generator=generator) for _ in range(len(x))])
        rows = torch.arange(len(x))[:, None]
        shuffled_logits, shuffled_weights = task(x[rows, perms], mask[rows, perms])
    assert torch.allclose(logits, shuffled_logits, atol=1e-5)
    assert torch.allclose(weights[rows, perms], shuffled_weights, atol=1e-6)


@pytest.mark.parametrize("name", POOLING_HEADS)
def test_instance_weights_sum_to_one_and_skip_padding(name: str) -> None:
    task = _task(_heads()[name])
    x, mask = _padded_batch()
    with torch.no_grad():
        _, weights = task(x, mask)
        single_logits, _ = task(x[1, :2])  # a bag given alone, without padding or batch-mates
    assert torch.allclose(weights.sum(1), torch.ones(len(x)), atol=1e-6)
    assert (weights[~mask] == 0).all() and (weights[mask] >= 0).all()
    assert torch.allclose(task(x, mask)[0][1], single_logits[0], atol=1e-5)


def test_mean_and_attention_pooling_follow_their_formulas() -> None:
    heads = _heads()
    h, mask = torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool)
    bag, weights = heads["mil_mean"].pool(h, mask)
    assert torch.allclose(bag, h.mean(1)) and torch.allclose(weights, torch.full((1, 3), 1 / 3))
    attention = heads["mil_attention"]
    expected = torch.softmax(attention.w(torch.tanh(attention.V(h))).squeeze(-1), dim=1)
    assert torch.allclose(attention.pool(h, mask)[1], expected)
    gated = heads["mil_gated_attention"]
    gate = torch.tanh(gated.V(h)) * torch.sigmoid(gated.U(h))
    assert torch.allclose(gated.pool(h, mask)[1], torch.softmax(gated.w(gate).squeeze(-1), dim=1))


def test_a_head_that_does_not_pool_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not pool"):
        _task(LinearHead(16, 2))


def _data(n: int = 300, classes: int = 10) -> ProcessedData:
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    perm = rng.permutation(n)
    parts = {"train": np.sort(perm[:180]), "val": np.sort(perm[180:240]), "test": np.sort(perm[240:])}
    return ProcessedData(rng.normal(size=(n, *INSTANCE)).astype(np.float32), y, [str(c) for c in range(classes)], parts,
                         "fp", "md5")


def test_bag_label_is_positive_iff_the_bag_holds_the_target() -> None:
    data = _data()
    split = TargetBags(target=9, train_bags=40, val_bags=20, test_bags=30)(data, seed=0)
    labels = np.concatenate([bags.labels for bags in split.parts.values()])
    assert 0 < labels.mean() < 1, "both bag labels must occur"
    for bags in split.parts.values():
        for members, label in zip(bags.members, bags.labels, strict=True):
            assert label == int((data.y[members] == 9).any())
    assert split.classes == ["no 9", "has 9"]


def test_bags_draw_instances_from_their_own_part_only() -> None:
    data = _data()
    split = TargetBags(target=9, train_bags=200, val_bags=50, test_bags=200)(data, seed=3)
    used = {part: np.unique(np.concatenate(bags.members)) for part, bags in split.parts.items()}
    for part, instances in used.items():
        assert set(instances) <= set(data.parts[part].tolist()), part
    assert not set(used["train"]) & set(data.parts["test"].tolist()), "a test instance sits in a training bag"


def test_training_bags_follow_the_run_seed_and_test_bags_do_not() -> None:
    data, source = _data(), TargetBags(target=9, train_bags=10, val_bags=10, test_bags=10)
    first, second = source(data, seed=0), source(data, seed=1)
    same = [np.array_equal(a, b) for a, b in zip(first.parts["test"].members, second.parts["test"].members, strict=True)]
    assert all(same)
    assert not all(np.array_equal(a, b) for a, b in zip(first.parts["train"].members, second.parts["train"].members,
                                                         strict=True))


@pytest.mark.parametrize(("size", "low", "high"), [({"distribution": "normal", "mean": 10, "std": 4, "min": 6, "max": 12}, 6, 12),
                                                   ({"distribution": "uniform", "min": 3, "max": 5}, 3, 5),
                                                   ({"distribution": "fixed", "mean": 7}, 7, 7)])
def test_bag_sizes_follow_the_configured_distribution(size: dict, low: int, high: int) -> None:
    sizes = BagSize(**size).draw(np.random.default_rng(0), 500)
    assert sizes.min() == low and sizes.max() == high
    with pytest.raises(ConfigError, match="data.bags.size.distribution"):
        BagSize(distribution="poisson")


def test_bag_file_keeps_each_bag_in_one_part(tmp_path) -> None:
    """Bring-your-own bags: the bag-level split keeps every bag's instances together, and a bag split across
    parts by an instance-level split is refused."""
    y = np.zeros(60, dtype=np.int64)
    rows = [{"bag": f"slide{b}", "instance": b * 6 + k, "label": b % 2} for b in range(10) for k in range(6)]
    (tmp_path / "bags.json").write_text(json.dumps(rows))
    with open(tmp_path / "bags.csv", "w") as fh:
        fh.write("bag,instance,label\n" + "".join(f"{r['bag']},{r['instance']},{r['label']}\n" for r in rows))
    parts = bag_holdout(y, str(tmp_path / "bags.csv"), val=0.2, test=0.2)
    data = ProcessedData(np.zeros((60, *INSTANCE), np.float32), y, ["tile"], parts, "fp", "md5")
    for path in ("bags.csv", "bags.json"):
        split = BagFile(str(tmp_path / path))(data, seed=0)
        assert {p: len(b) for p, b in split.parts.items()} == {"train": 6, "val": 2, "test": 2}
        for part, bags in split.parts.items():
            for members, label, bag in zip(bags.members, bags.labels, bags.ids, strict=True):
                assert set(members) <= set(parts[part].tolist()) and label == int(bag.removeprefix("slide")) % 2
    instance_split = {"train": np.arange(0, 60, 2), "val": np.arange(1, 30, 2), "test": np.arange(31, 60, 2)}
    with pytest.raises(ConfigError, match="slide0' has instances in the train and val parts"):
        BagFile(str(tmp_path / "bags.csv"))(ProcessedData(data.x, y, ["tile"], instance_split, "fp", "md5"), seed=0)


def test_mil_needs_bags_and_a_pooling_head(compose, tmp_path) -> None:
    cfg = compose("task=mil", "head=mil_mean")
    data = load_processed(cfg, tmp_path)
    with pytest.raises(ConfigError, match="data.bags"):
        instantiate(cfg.task.datamodule, "task.datamodule", _partial_=True)(data=data, batch_size=1, num_workers=0, seed=0,
                                                                         augment=None)
    cfg = compose("experiment=mil_digits", "head=linear", "data.bags.test_bags=5")
    dm = instantiate(cfg.task.datamodule, "task.datamodule", _partial_=True)(data=load_processed(cfg, ROOT), batch_size=1,
                                                                       num_workers=0, seed=0, augment=None)
    assert isinstance(dm, BagDataModule) and dm.input_shape == (1, 8, 8) and dm.num_classes == 2
    with pytest.raises(ConfigError, match="head: LinearHead does not pool"):
        build_task(TaskContext(cfg, dm.input_shape, dm.num_classes))


def test_bring_your_own_tiles_experiment(compose, tmp_path) -> None:
    """experiment=mil_tiles: tiles from an .npz, bags from a CSV, split by bag, served by the bag datamodule."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiles.npz", x=rng.normal(size=(80, 1, 4, 4)).astype(np.float32), y=np.zeros(80, dtype=np.int64))
    with open(tmp_path / "bags.csv", "w") as fh:
        fh.write("bag,instance,label\n" + "".join(f"s{i // 4},{i},{(i // 4) % 2}\n" for i in range(80)))
    cfg = compose("experiment=mil_tiles", f"data.source.path={tmp_path / 'tiles.npz'}", f"split.path={tmp_path / 'bags.csv'}")
    data = load_processed(cfg, tmp_path)
    dm = instantiate(cfg.task.datamodule, "task.datamodule", _partial_=True)(data=data, batch_size=2, num_workers=0, seed=0,
                                                                       augment=None)
    assert {part: len(bags) for part, bags in dm.parts.items()} == {"train": 12, "val": 4, "test": 4}
    assert dm.classes == ["0", "1"] and dm.input_shape == (1, 4, 4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (2, 4, 1, 4, 4) and batch["mask"].all()


def _bag_module(seed: int) -> BagDataModule:
    return BagDataModule(_data(), TargetBags(target=9, train_bags=12, val_bags=6, test_bags=8, size={"mean": 4, "std": 1}),
                         batch_size=2, seed=seed, eval_batch_size=4)


def _order(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(b) for batch in loader for b in batch["bag"]]


def test_bag_loaders_are_seeded_and_leave_the_global_rng_alone() -> None:
    """Shuffling depends on (seed, epoch) only, and iterating a loader draws nothing from torch's global RNG
    (a loader without its own generator draws its workers' base seed there, shifting every later dropout
    mask by when it was iterated: after a resume, at another moment)."""
    first, again, other = (_bag_module(seed).train_dataloader() for seed in (0, 0, 1))
    state = torch.get_rng_state()
    epoch0 = _order(first)
    assert epoch0 == _order(again) and sorted(epoch0) == list(range(12))
    assert torch.equal(torch.get_rng_state(), state)
    assert epoch0 != _order(other)
    modules = [_bag_module(0) for _ in range(2)]
    loaders = [dm.train_dataloader() for dm in modules]
    for dm in modules:
        dm.set_epoch(3)  # what EpochSeed calls at every epoch start, also the first one after a resume
    assert _order(loaders[0]) == _order(loaders[1]) != epoch0


def test_mil_exposes_bag_probabilities_for_the_test_and_validation_bags() -> None:
    """What ``labline.runs.lightning_run.test`` saves as predictions/test.npz and val.npz: one row of bag probabilities per
    bag in the part's order, its label, and the bag ids as index; the validation pass leaves the test loader as it was."""
    import lightning.pytorch as pl

    from labline.runs.predictions import serving_as_test

    dm, task = _bag_module(0), _task(_heads()["mil_attention"])
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    for part in ("test", "val"):
        with serving_as_test(dm, part):
            trainer.test(task, datamodule=dm, verbose=False)
        probs, targets = task.test_probabilities()
        bags = dm.parts[part]
        assert probs.shape == (len(bags), 2) and np.allclose(probs.sum(1), 1.0, atol=1e-6)
        assert np.array_equal(targets, bags.labels)
        assert dm.part_index(part).tolist() == bags.ids == [f"{part}-{i}" for i in range(len(bags))]
        with torch.no_grad():  # the last bag scored alone
            single = task(torch.from_numpy(dm.data.x[bags.members[-1]]))[0]
        assert torch.allclose(single.softmax(-1)[0], torch.from_numpy(probs[-1]), atol=1e-5)
    assert dm.sets["test"] is dm.part_dataset("test")


def test_split_hash_tells_apart_runs_tested_on_different_bags() -> None:
    """Same test instances, other bags (another ``bags.seed``): not the same test examples for an ensemble."""
    from labline.runs.records import split_hash

    data = _data()
    def module(run_seed: int, bag_seed: int) -> BagDataModule:
        return BagDataModule(data, TargetBags(target=9, train_bags=12, val_bags=6, test_bags=8, seed=bag_seed), seed=run_seed)

    assert split_hash(data, module(0, 0)) == split_hash(data, module(1, 0)), "run seeds change training bags only"
    assert split_hash(data, module(0, 0)) != split_hash(data, module(0, 1))
    assert split_hash(data) != split_hash(data, module(0, 0))
