"""Backbones built from the real composed configs: shapes, known values, init / weights / freeze, bad values.

Composing conf/ costs ~0.4 s (more as conf/ grows), so each backbone option
is composed once per module and knobs are then set on a copy of the composed
config, exactly where ``backbone.KEY=VALUE`` puts them (struct mode still
rejects unknown keys).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import lightning.pytorch as pl
import mlflow
import numpy as np
import pytest
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labline.core.config import compose_config
from labline.core.errors import ConfigError
from labline.data.sources import sklearn_digits, sklearn_digits_sequence
from labline.models.backbones.shapes import as_sequence
from labline.models.blocks import (
    BasicBlock,
    Bottleneck,
    CausalConv1d,
    ConvNormAct,
    DepthwiseSeparableConv,
    PatchEmbedding,
    SqueezeExcite,
    effective_kernel,
)
from labline.models.parts import build_backbone
from labline.models.task import TaskContext, build_task
from labline.runs.checkpoints import resolve_checkpoint
from labline.tracking.store import ensure_experiment
from testroot import CONF

BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml"))
DIGITS = [1, 8, 8]
IMAGE_SHAPES = [DIGITS, [3, 32, 32]]
SEQUENCE_SHAPES = [DIGITS, [1, 64], [3, 20]]
# (overrides, input shapes): every option, plus the variants a user selects by a knob.
CASES: list[tuple[str, dict[str, Any], list[list[int]]]] = [
    ("mlp", {}, [*IMAGE_SHAPES, [1, 64]]),
    ("cnn", {}, IMAGE_SHAPES),
    ("cnn", {"se": True, "norm": "layer"}, IMAGE_SHAPES),
    ("vgg", {}, IMAGE_SHAPES),
    ("vgg", {"se": True, "norm": "none"}, [DIGITS]),
    ("resnet", {}, IMAGE_SHAPES),
    ("resnet", {"block": "bottleneck", "se": True}, IMAGE_SHAPES),
    ("mobilenet", {}, IMAGE_SHAPES),
    ("mobilenet", {"se": True, "width_mult": 0.5, "activation": "silu"}, [DIGITS]),
    ("vit", {}, IMAGE_SHAPES),
    ("vit", {"patch_size": 4, "activation": "relu"}, [DIGITS]),
    ("conv1d", {}, SEQUENCE_SHAPES),
    ("conv1d", {"norm": "layer", "kernel_size": 5}, SEQUENCE_SHAPES),
    ("tcn", {}, SEQUENCE_SHAPES),
    ("tcn", {"norm": "batch"}, SEQUENCE_SHAPES),
    ("gru", {}, SEQUENCE_SHAPES),
    ("gru", {"bidirectional": True, "num_layers": 2, "norm": "layer"}, SEQUENCE_SHAPES),
    ("lstm", {}, SEQUENCE_SHAPES),
    ("lstm", {"bidirectional": True, "norm": "batch"}, SEQUENCE_SHAPES),
]


@pytest.fixture(scope="module")
def config():
    """``config("resnet", block="bottleneck")``: the composed train config with ``backbone=resnet backbone.block=bottleneck``."""
    composed: dict[str, DictConfig] = {}

    def _config(name: str, **knobs: Any) -> DictConfig:
        if name not in composed:
            composed[name] = compose_config([f"backbone={name}"], conf=CONF)
        cfg = copy.deepcopy(composed[name])
        for key, value in knobs.items():
            OmegaConf.update(cfg.backbone, key, value, merge=False)
        return cfg

    return _config


@pytest.fixture(scope="module")
def build(config):
    """``build("tcn", [1, 64], norm="batch")`` -> ``build_backbone``'s ``(module, width)``."""

    def _build(name: str, shape: list[int], **knobs: Any) -> tuple[nn.Module, int]:
        return build_backbone(config(name, **knobs).backbone, shape)

    return _build


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _forward_backward(module: nn.Module, width: int, shape: list[int]) -> None:
    module.train()
    out = module(torch.randn(4, *shape))
    assert out.shape == (4, width)
    out.square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    module.zero_grad()


@pytest.mark.parametrize(("name", "knobs", "shapes"), CASES, ids=[f"{n}{k or ''}" for n, k, _ in CASES])
def test_backbone_runs_forward_and_backward(build, name, knobs, shapes):
    for shape in shapes:
        backbone, width = build(name, shape, **knobs)
        assert width == backbone.out_features
        _forward_backward(backbone, width, shape)


def test_every_option_yaml_documents_its_knobs_and_labline_keys():
    assert {"mlp", "cnn", "vgg", "resnet", "mobilenet", "vit", "conv1d", "tcn", "gru", "lstm"} <= set(BACKBONES)
    for name in BACKBONES:
        text = (CONF / "backbone" / f"{name}.yaml").read_text()
        node = yaml.safe_load(text)
        assert (node["init"], node["weights"], node["freeze"]) == (None, None, False), name
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line and not line.startswith(("#", "_target_")):
                assert lines[i - 1].startswith("#"), f"{name}.yaml: no comment above '{line}'"


def test_users_override_labline_keys_without_plus(compose):
    cfg = compose("backbone=resnet", "backbone.block=bottleneck", "backbone.init=kaiming", "backbone.freeze=true")
    backbone, width = build_backbone(cfg.backbone, DIGITS)
    assert width == 128 * 4
    assert not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("name", ["cnn", "vgg", "resnet", "mobilenet", "vit"])
def test_image_backbones_refuse_sequences(build, name):
    with pytest.raises(ConfigError, match="needs image input"):
        build(name, [1, 64])


def test_deep_conv_stacks_never_shrink_digits_below_one_pixel(build):
    five = {"depths": [1] * 5, "widths": [4] * 5}
    for name, knobs in (("cnn", {"channels": [4] * 6}), ("vgg", {"stages": [[4]] * 6}), ("resnet", five), ("mobilenet", five)):
        backbone, width = build(name, DIGITS, **knobs)
        assert backbone(torch.randn(2, *DIGITS)).shape == (2, width)


def test_any_torch_module_works_with_labline_keys():
    node = OmegaConf.create({"_target_": "torch.nn.Sequential",
                             "_args_": [{"_target_": "torch.nn.Flatten"},
                                        {"_target_": "torch.nn.Linear", "in_features": 64, "out_features": 12}],
                             "init": "xavier", "weights": None, "freeze": True})
    backbone, width = build_backbone(node, DIGITS)
    assert width == 12
    assert not any(p.requires_grad for p in backbone.parameters())
    assert torch.count_nonzero(backbone[1].bias) == 0  # xavier init zeroes biases
    _, width = build_backbone(OmegaConf.create({"_target_": "torch.nn.Flatten"}), DIGITS)
    assert width == 64


# ---- known values of the blocks ----

def test_separable_conv_parameter_count():
    standard = ConvNormAct(3, 4, 3, norm="none", activation=None, bias=False)
    separable = DepthwiseSeparableConv(3, 4, 3, norm="none", bias=False)
    assert sum(p.numel() for p in standard.parameters()) == 4 * 3 * 3 * 3 == 108
    assert sum(p.numel() for p in separable.parameters()) == 3 * 3 * 3 + 1 * 1 * 3 * 4 == 39
    x = torch.randn(2, 3, 8, 8)
    assert separable(x).shape == standard(x).shape == (2, 4, 8, 8)


def test_mobilenet_uses_depthwise_convs(build):
    backbone, _ = build("mobilenet", DIGITS)
    blocks = [m for m in backbone.modules() if isinstance(m, DepthwiseSeparableConv)]
    assert len(blocks) == 5  # depths [1, 2, 2]
    depthwise = blocks[0][0][0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels


def test_vit_patch_embedding_of_a_224_image():
    tokens = PatchEmbedding(3, 768, 16)(torch.zeros(1, 3, 224, 224))
    assert tokens.shape == (1, 196, 768)


def test_vit_tokens_follow_the_patch_size(build):
    backbone, width = build("vit", DIGITS, patch_size=4, dim=32)
    assert backbone.pos_embedding.shape == (1, 4 + 1, 32)  # 2x2 patches + class token
    assert backbone.patches(torch.zeros(1, *DIGITS)).shape == (1, 4, 32)
    assert width == 32


@pytest.mark.parametrize(("k", "r", "span"), [(3, 1, 3), (3, 2, 5), (3, 4, 9), (5, 2, 9), (2, 8, 9)])
def test_dilated_conv_effective_kernel(k, r, span):
    assert effective_kernel(k, r) == span
    conv = CausalConv1d(1, 1, k, dilation=r, bias=False)
    nn.init.constant_(conv.weight, 1.0)
    x = torch.randn(1, 1, 30, requires_grad=True)
    conv(x)[0, 0, -1].backward()
    seen = torch.nonzero(x.grad[0, 0]).flatten()
    assert int(seen.max() - seen.min()) + 1 == span
    assert len(seen) == k


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
def test_tcn_is_causal(build, norm):
    backbone, _ = build("tcn", [2, 40], norm=norm)
    backbone.eval()
    x = torch.randn(3, 2, 40)
    changed = x.clone()
    changed[..., 21:] = torch.randn(3, 2, 19)
    with torch.no_grad():
        before, after = backbone.sequence(x), backbone.sequence(changed)
    assert torch.equal(before[..., :21], after[..., :21])
    assert not torch.allclose(before[..., 21:], after[..., 21:])


def _steps_seen(backbone: nn.Module, steps: int) -> torch.Tensor:
    x = torch.randn(1, 1, steps, requires_grad=True)
    backbone.eval()
    backbone(x).sum().backward()
    return torch.nonzero(x.grad[0, 0]).flatten()


def test_tcn_receptive_field_doubles_per_block(build):
    backbone, _ = build("tcn", [1, 64], pool="last", grow=False)
    assert backbone.receptive_field == 1 + 2 * (3 - 1) * (1 + 2 + 4) == 29
    seen = _steps_seen(backbone, 64)
    assert int(seen.min()) == 64 - 29 and int(seen.max()) == 63


def test_tcn_grows_until_its_last_step_sees_the_whole_sequence_by_default(build):
    grown, width = build("tcn", [1, 64])
    assert len(grown.net) == 5 and grown.receptive_field == 1 + 2 * 2 * 31 == 125 and width == 32
    assert grown.pool == "last" and len(_steps_seen(grown, 64)) == 64, "the causal last step sees every step"
    short, _ = build("tcn", [1, 16])
    assert len(short.net) == 3 and short.pool == "last", "three blocks (29 steps) already cover 16"


def test_tcn_without_growth_averages_a_sequence_longer_than_its_receptive_field(build):
    backbone, _ = build("tcn", [1, 64], grow=False)
    assert len(backbone.net) == 3 and backbone.pool == "mean" and len(_steps_seen(backbone, 64)) == 64


def test_recurrent_frames_stack_consecutive_steps_ending_on_the_last_one(build):
    from labline.models.backbones.rnn import frame_length

    assert [frame_length("auto", n) for n in (8, 16, 17, 64, 1000)] == [1, 1, 5, 8, 32]
    with pytest.raises(ConfigError, match="backbone.frame"):
        frame_length(0, 64)
    gru, width = build("gru", [1, 6], frame=4)
    assert gru.rnn.input_size == 4 and width == 2 * 64
    x = torch.arange(6.0).view(1, 1, 6)
    assert gru.frames(x).tolist() == [[[0.0, 0.0, 0.0, 1.0], [2.0, 3.0, 4.0, 5.0]]], "zeros before the first step"
    stepwise, _ = build("gru", [1, 6])
    assert torch.equal(stepwise.frames(x), x.transpose(1, 2))


def test_squeeze_excite_reweights_channels():
    torch.manual_seed(0)
    se = SqueezeExcite(8, reduction=2)
    x = torch.rand(2, 8, 5, 5) + 0.5
    out = se(x)
    assert out.shape == x.shape
    per_channel = (out / x).flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel))  # one weight per channel
    assert ((per_channel > 0) & (per_channel < 1)).all()
    assert per_channel[..., 0].std(dim=1).min() > 1e-3  # channels get different weights
    assert torch.allclose(per_channel[..., 0], se.gate(x.mean((2, 3))))


@pytest.mark.parametrize("name", ["cnn", "vgg", "resnet", "mobilenet"])
def test_se_option_adds_blocks(build, name):
    with_se, _ = build(name, DIGITS, se=True)
    without, _ = build(name, DIGITS)
    assert any(isinstance(m, SqueezeExcite) for m in with_se.modules())
    assert not any(isinstance(m, SqueezeExcite) for m in without.modules())


def test_bottleneck_expands_four_times_with_projection(build):
    backbone, width = build("resnet", DIGITS, block="bottleneck", depths=[2, 1], widths=[8, 16])
    assert width == 16 * 4
    first, second, third = [m for m in backbone.modules() if isinstance(m, Bottleneck)]
    reduce, _, expand = first.body
    assert (reduce[0].kernel_size, reduce[0].out_channels) == ((1, 1), 8)
    assert (expand[0].kernel_size, expand[0].out_channels) == ((1, 1), 32)
    assert isinstance(first.shortcut, ConvNormAct) and first.shortcut[0].kernel_size == (1, 1)  # 8 -> 32 channels
    assert isinstance(second.shortcut, nn.Identity)  # 32 -> 32, stride 1
    assert third.shortcut[0].stride == (2, 2) and third.body[1][0].stride == (2, 2)  # next stage halves 8x8 -> 4x4
    assert third(torch.randn(2, 32, 8, 8)).shape == (2, 64, 4, 4)


def test_basic_block_keeps_the_identity_shortcut():
    assert isinstance(BasicBlock(8, 8).shortcut, nn.Identity)
    assert isinstance(BasicBlock(8, 16).shortcut, ConvNormAct)


def test_sequence_backbones_read_image_rows_as_time_steps(build):
    x = torch.randn(2, 3, 4, 5)
    rows = as_sequence(x)
    assert rows.shape == (2, 4, 15)
    assert torch.equal(rows[1, 2], x[1, :, 2, :].reshape(-1))
    image_gru, _ = build("gru", [3, 4, 5])
    seq_gru, _ = build("gru", [15, 4])
    seq_gru.load_state_dict(image_gru.state_dict())
    image_gru.eval()
    seq_gru.eval()
    assert torch.allclose(image_gru(x), seq_gru(rows.transpose(1, 2)))


def test_digits_sequence_source_is_the_raster_scan():
    images, sequences = sklearn_digits(), sklearn_digits_sequence()
    assert sequences.x.shape == (1797, 1, 64)
    np.testing.assert_array_equal(sequences.x[5, 0, 8:16], images.x[5, 0, 1])
    np.testing.assert_array_equal(sequences.y, images.y)


# ---- init ----

def _first_linear(build, init: str | None) -> nn.Linear:
    backbone, _ = build("mlp", [1, 16, 16], hidden=[512], init=init)
    return backbone.net[1]


def test_xavier_init_statistics(build):
    layer = _first_linear(build, "xavier")
    assert layer.weight.std().item() == pytest.approx((2 / (256 + 512)) ** 0.5, rel=0.02)
    assert layer.weight.abs().max().item() <= (6 / (256 + 512)) ** 0.5  # uniform bound
    assert torch.count_nonzero(layer.bias) == 0


def test_kaiming_init_statistics(build):
    layer = _first_linear(build, "kaiming")
    assert layer.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.02)
    assert abs(layer.weight.mean().item()) < 0.01
    assert torch.count_nonzero(layer.bias) == 0


def test_default_init_is_left_alone(build):
    layer = _first_linear(build, None)
    assert layer.weight.std().item() == pytest.approx((1 / (3 * 256)) ** 0.5, rel=0.02)  # torch's default for Linear
    assert torch.count_nonzero(layer.bias) > 0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_orthogonal_init_makes_each_recurrent_gate_orthogonal(build, cell):
    backbone, _ = build(cell, DIGITS, hidden_size=32, init="orthogonal")
    gates = backbone.rnn.weight_hh_l0.detach().chunk(3 if cell == "gru" else 4)
    for w in gates:
        assert torch.allclose(w @ w.T, torch.eye(32), atol=1e-5)
    w_ih = backbone.rnn.weight_ih_l0.detach().chunk(len(gates))[0]  # (32, 8): orthonormal columns
    assert torch.allclose(w_ih.T @ w_ih, torch.eye(8), atol=1e-5)


def test_orthogonal_init_on_attention_and_convs(build):
    backbone, _ = build("vit", DIGITS, init="orthogonal")
    q = backbone.encoder.layers[0].self_attn.in_proj_weight.detach().chunk(3)[0]
    assert torch.allclose(q @ q.T, torch.eye(64), atol=1e-5)
    conv = backbone.patches.proj.weight.detach().flatten(1)  # (64, 4): orthonormal columns
    assert torch.allclose(conv.T @ conv, torch.eye(4), atol=1e-5)


# ---- freeze ----

def _task(config, **knobs: Any) -> pl.LightningModule:
    return build_task(TaskContext(config("cnn", channels=[4, 8], **knobs), DIGITS, 10, resolve_checkpoint=resolve_checkpoint))


def _fit(task: pl.LightningModule, steps: int = 2) -> pl.Trainer:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, *DIGITS), torch.randint(0, 10, (32,)))
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu")
    trainer.fit(task, train_dataloaders=DataLoader(data, batch_size=16))
    return trainer


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_keeps_backbone_and_batch_norm_statistics(config, freeze):
    task = _task(config, freeze=freeze)
    backbone_before, head_before = _snapshot(task.backbone), _snapshot(task.head)
    assert any("running_mean" in k for k in backbone_before)
    _fit(task)
    assert _same(backbone_before, _snapshot(task.backbone)) is freeze
    assert not _same(head_before, _snapshot(task.head))
    assert all(p.requires_grad is not freeze for p in task.backbone.parameters())
    if freeze:
        task.train()
        task(torch.randn(2, *DIGITS))
        assert not any(m.training for m in task.backbone.modules())


# ---- weights ----

def _trained_checkpoint(config, tmp_path, **knobs: Any) -> tuple[pl.LightningModule, str]:
    task = _task(config, **knobs)
    trainer = _fit(task, steps=1)
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    return task, str(path)


def test_weights_from_a_lightning_checkpoint(config, tmp_path):
    trained, path = _trained_checkpoint(config, tmp_path)
    assert not _same(_snapshot(trained.backbone), _snapshot(_task(config).backbone))
    loaded = _task(config, weights=path, init="kaiming")
    assert _same(_snapshot(trained.backbone), _snapshot(loaded.backbone))


def test_weights_from_a_plain_state_dict(build, tmp_path):
    source, _ = build("gru", DIGITS)
    path = tmp_path / "weights.pt"
    torch.save({f"backbone.{k}": v for k, v in source.state_dict().items()} | {"head.fc.weight": torch.zeros(2, 2)}, path)
    loaded, _ = build("gru", DIGITS, weights=str(path))
    assert _same(_snapshot(source), _snapshot(loaded))


def test_frozen_run_checkpoint_has_plain_backbone_keys(config, tmp_path):
    trained, path = _trained_checkpoint(config, tmp_path, freeze=True)
    loaded = _task(config, weights=path)
    assert _same(_snapshot(trained.backbone), _snapshot(loaded.backbone))


@pytest.mark.parametrize(("name", "knobs"), [("cnn", {"channels": [4, 16]}), ("resnet", {})])
def test_weights_of_another_architecture_are_refused(config, build, tmp_path, name, knobs):
    _, path = _trained_checkpoint(config, tmp_path)
    with pytest.raises(ConfigError, match=r"^backbone\.weights: .* does not fit this backbone"):
        build(name, DIGITS, weights=path, **knobs)


def test_missing_or_unreadable_weights_are_config_errors(build, tmp_path):
    with pytest.raises(ConfigError, match=r"^backbone\.weights: no checkpoint file"):
        build("cnn", DIGITS, weights=str(tmp_path / "nope.ckpt"))
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"^backbone\.weights: cannot read"):
        build("cnn", DIGITS, weights=str(junk))
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(ConfigError, match=r"holds no 'backbone\.\*' weights"):
        build("cnn", DIGITS, weights=str(unrelated))


def test_weights_from_an_mlflow_run(config, tmp_path):
    trained, path = _trained_checkpoint(config, tmp_path)
    uri, experiment_id = ensure_experiment("backbone-weights")
    mlflow.set_tracking_uri(uri)  # this test logs its runs with the fluent API
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifact(path, artifact_path="checkpoints")
    loaded = _task(config, weights=run.info.run_id)
    assert _same(_snapshot(trained.backbone), _snapshot(loaded.backbone))

    unknown = uuid.uuid4().hex
    with pytest.raises(ConfigError, match=rf"^backbone\.weights: unknown MLflow run id '{unknown}'"):
        _task(config, weights=unknown)
    with mlflow.start_run(experiment_id=experiment_id) as empty:
        mlflow.log_text("no checkpoint here", "notes.txt")
    with pytest.raises(ConfigError, match=r"has 0 checkpoints/\*\.ckpt artifacts"):
        _task(config, weights=empty.info.run_id)


def test_run_id_without_a_store_is_a_config_error(config, isolated_store):
    (isolated_store / "mlflow.db").unlink()  # every test's store starts as a copy of an empty one: here there is none
    with pytest.raises(ConfigError, match=r"^backbone\.weights: no MLflow store"):
        _task(config, weights=uuid.uuid4().hex)


# ---- bad values ----

@pytest.mark.parametrize(("name", "knobs", "shape", "message"), [
    ("cnn", {"activation": "swish"}, DIGITS, r"^backbone\.activation: unknown activation 'swish' \(valid: .*relu"),
    ("gru", {"cell": "rnn"}, DIGITS, r"^backbone\.cell: unknown cell 'rnn' \(valid: gru, lstm\)"),
    ("vit", {"patch_size": 3}, DIGITS, r"^backbone\.patch_size: 3 does not divide the image size 8x8 \(valid: 1, 2, 4, 8\)"),
    ("vit", {"heads": 3}, DIGITS, r"^backbone\.heads: 3 heads do not divide dim=64"),
    ("mlp", {"dropout": -0.1}, DIGITS, r"^backbone\.dropout: must be in \[0, 1\)"),
    ("tcn", {"dropout": 1.0}, [1, 64], r"^backbone\.dropout: must be in \[0, 1\)"),
    ("resnet", {"block": "wide"}, DIGITS, r"^backbone\.block: unknown block 'wide' \(valid: basic, bottleneck\)"),
    ("resnet", {"depths": [2, 2]}, DIGITS, r"^backbone\.depths: has 2 stages but backbone\.widths has 3"),
    ("mobilenet", {"width_mult": 0.0}, DIGITS, r"^backbone\.width_mult: must be positive"),
    ("conv1d", {"kernel_size": 4}, [1, 64], r"^backbone\.kernel_size: must be odd"),
    ("vgg", {"stages": [[8], []]}, DIGITS, r"^backbone\.stages: must be a non-empty list"),
    ("conv1d", {"norm": "group"}, [1, 64], r"^backbone\.norm: unknown norm 'group'"),
    ("cnn", {"init": "he"}, DIGITS, r"^backbone\.init: unknown init 'he' \(valid: null, xavier, kaiming, orthogonal\)"),
    ("cnn", {"freeze": "yes"}, DIGITS, r"^backbone\.freeze: must be true or false"),
    ("gru", {}, [64], r"^backbone: gru needs a sequence"),
])
def test_bad_values_are_one_line_config_errors(build, name, knobs, shape, message):
    with pytest.raises(ConfigError, match=message) as caught:
        build(name, shape, **knobs)
    assert "\n" not in str(caught.value)
