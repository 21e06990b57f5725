"""Augmentations: kernel maths, geometry on images with known answers, seeding, and train-only application."""

from __future__ import annotations

import copy
import math
from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labline.core.config import compose_config, group_options, hydra_context
from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.data.augment import (
    BrightnessContrast,
    Compose,
    GaussianBlur,
    GaussianNoise,
    RandomAffine,
    RandomCrop,
    ResizedCrop,
    gaussian_kernel1d,
    gaussian_kernel2d,
)
from labline.data.datamodule import ArrayDataModule
from labline.data.pipeline import ProcessedData
from testroot import CONF

with hydra_context(CONF):
    OPTIONS = [o for o in group_options("augment") if o != "none"]


@pytest.fixture(scope="module")
def compose():
    """The conftest ``compose`` with one Hydra initialisation and a cache for the module (~0.3 s per compose saved)."""
    with hydra_context(CONF):
        yield cache(lambda *overrides: compose_config(list(overrides), conf=CONF))


def _images(n: int = 6, c: int = 2, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(7))


def _ramp(n: int, h: int, w: int, axis: str = "x") -> torch.Tensor:
    """Pixel coordinate around the centre along ``axis``: bilinear resampling is exact on it."""
    coords = torch.arange(w if axis == "x" else h, dtype=torch.float32) - ((w if axis == "x" else h) - 1) / 2
    image = coords[None, :].expand(h, w) if axis == "x" else coords[:, None].expand(h, w)
    return image.expand(n, 1, h, w).clone()


def test_the_design_s_augmentations_are_all_options() -> None:
    assert set(OPTIONS) >= {"random_crop", "global_crop", "local_crop", "rotation", "scale", "translation", "blur", "noise",
                            "jitter", "standard"}


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_kernel_is_normalised_symmetric_and_separable(sigma: float) -> None:
    k2 = gaussian_kernel2d(sigma, 7)[0]
    k1 = gaussian_kernel1d(sigma, 7)[0]
    assert k2.sum().item() == pytest.approx(1.0) and k1.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(k2, k2.T)
    torch.testing.assert_close(k2, k2.flip(0).flip(1))
    torch.testing.assert_close(k2, torch.outer(k1, k1))
    # the formula's shape: one pixel off-centre weighs exp(-1 / (2 sigma^2)) of the centre
    assert (k2[3, 4] / k2[3, 3]).item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-5)
    assert (k2[4, 4] / k2[3, 3]).item() == pytest.approx(math.exp(-2 / (2 * sigma**2)), rel=1e-5)


def test_blur_equals_a_2d_convolution_and_keeps_a_constant_image() -> None:
    x = _images(c=1, h=12, w=12)
    blur = GaussianBlur(sigma=[1.0, 1.0], kernel_size=5)
    kernel = gaussian_kernel2d(1.0, 5)[0]
    expected = F.conv2d(x, kernel[None, None])  # "valid" 2-D convolution: the interior
    torch.testing.assert_close(blur(x)[:, :, 2:-2, 2:-2], expected, rtol=1e-5, atol=1e-5)
    constant = torch.full((2, 3, 9, 9), 0.7)
    torch.testing.assert_close(GaussianBlur(sigma=[0.3, 2.0])(constant), constant)
    assert blur(x).std() < x.std()


def test_random_crop_output_is_a_window_of_the_padded_input() -> None:
    x = _images(n=20)
    out = RandomCrop(padding=2)(x)
    padded = F.pad(x, [2] * 4, mode="replicate")
    offsets = set()
    for i in range(len(x)):
        match = [(t, c) for t in range(5) for c in range(5) if torch.equal(out[i], padded[i, :, t:t + 8, c:c + 8])]
        assert match, f"sample {i} is not a window of its padded image"
        offsets.add(match[0])
    assert len(offsets) > 3


def test_affine_identity_and_exact_zoom() -> None:
    x = _images()
    torch.testing.assert_close(RandomAffine()(x), x, rtol=1e-5, atol=1e-5)
    ramp = _ramp(3, 8, 8)
    zoomed = RandomAffine(scale=[2.0, 2.0])(ramp)  # output pixel u samples the input at u / 2
    torch.testing.assert_close(zoomed, ramp / 2)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (6, 10)])
def test_rotation_is_rigid_even_on_non_square_images(h: int, w: int) -> None:
    """Rotating a unit ramp gives a linear image whose gradient still has length 1 pixel per pixel."""
    ramp = _ramp(16, h, w)
    out = RandomAffine(degrees=180.0, padding_mode="zeros")(ramp)
    inner = out[:, 0, h // 2 - 1:h // 2 + 2, w // 2 - 1:w // 2 + 2]  # near the centre nothing leaves the image
    gx, gy = inner[:, 1, 2] - inner[:, 1, 1], inner[:, 2, 1] - inner[:, 1, 1]
    torch.testing.assert_close(torch.hypot(gx, gy), torch.ones(16), rtol=1e-4, atol=1e-4)
    angles = torch.atan2(gy, gx)
    assert angles.max() - angles.min() > 1.0  # different samples, different angles


def test_translation_shifts_each_sample_by_a_bounded_constant() -> None:
    ramp = _ramp(16, 10, 10)
    out = RandomAffine(translate=0.2, padding_mode="zeros")(ramp)
    shift = (ramp - out)[:, :, 3:-3, 3:-3]  # interior: a shift of at most 2 px keeps these in the image
    per_sample = shift.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample), rtol=1e-4, atol=1e-4)
    assert per_sample.abs().max() <= 0.2 * 10 + 1e-5 and per_sample[:, 0].std() > 0.1


def test_resized_crop_identity_and_quarter_area_zoom() -> None:
    x = _images()
    torch.testing.assert_close(ResizedCrop(scale=[1.0, 1.0], ratio=[1.0, 1.0])(x), x, rtol=1e-5, atol=1e-5)
    ramp = _ramp(4, 8, 8)
    out = ResizedCrop(scale=[0.25, 0.25], ratio=[1.0, 1.0])(ramp)  # half the width, stretched to full: slope 1/2
    torch.testing.assert_close(out[:, :, :, 1:] - out[:, :, :, :-1], torch.full((4, 1, 8, 7), 0.5), rtol=1e-4, atol=1e-4)
    assert ResizedCrop(scale=[0.1, 0.4], size=[4, 4])(x).shape == (6, 2, 4, 4)


def test_noise_and_jitter_statistics() -> None:
    x = torch.zeros(64, 1, 16, 16)
    assert (GaussianNoise(std=0.3)(x).std() - 0.3).abs() < 0.01
    y = _images(n=50)
    out = BrightnessContrast(brightness=0.5, contrast=0.3)(y)
    mean_in, mean_out = y.mean((1, 2, 3), keepdim=True), out.mean((1, 2, 3), keepdim=True)
    factor = ((out - mean_out) / (y - mean_in)).flatten(1)
    torch.testing.assert_close(factor, factor[:, :1].expand_as(factor), rtol=1e-3, atol=1e-3)
    assert ((factor[:, 0] >= 0.7 - 1e-4) & (factor[:, 0] <= 1.3 + 1e-4)).all()
    assert ((mean_out - mean_in).abs() <= 0.5 + 1e-5).all()


def test_probability_picks_whole_samples() -> None:
    x = _images(n=200)
    out = GaussianNoise(std=1.0, p=0.3)(x)
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.4


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_keeps_shapes_and_is_seeded(compose, name: str) -> None:
    # colour jitter reads RGB images in [0, 1]; every other option works on any channel count
    x = _images(n=16, c=3).sigmoid() if name == "color_jitter" else _images(n=16)
    cfg = compose(f"augment={name}")
    reseeded = copy.deepcopy(cfg)
    reseeded.seed = 1  # the option's `seed: ${seed}` follows the run's seed
    first, again, other = (instantiate(c.augment, "augment") for c in (cfg, cfg, reseeded))
    out = first(x.clone())
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(out, again(x.clone()))
    assert not torch.equal(out, other(x.clone()))
    assert not torch.equal(out, first(x.clone()))  # the stream moves on: each batch is augmented afresh


def _datamodule(augment, shape: tuple[int, ...] = (1, 8, 8)) -> ArrayDataModule:
    x = np.random.default_rng(0).normal(size=(12, *shape)).astype(np.float32)
    parts = {"train": np.arange(8), "val": np.arange(8, 10), "test": np.arange(10, 12)}
    data = ProcessedData(x, np.zeros(12, dtype=np.int64), ["a"], parts, "fp", "md5")
    return ArrayDataModule(data, batch_size=4, augment=augment)


@pytest.mark.parametrize("training", [True, False])
def test_datamodule_augments_only_while_training(compose, training: bool) -> None:
    dm = _datamodule(instantiate(compose("augment=standard").augment, "augment"))
    batch = next(iter(dm.train_dataloader() if training else dm.val_dataloader()))
    dm.trainer = SimpleNamespace(training=training)  # validating, testing and sanity checks all have training=False
    x, y = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(x, batch[0]) is not training and torch.equal(y, batch[1])


def test_datamodule_without_trainer_or_augment_passes_batches_through() -> None:
    batch = (torch.ones(2, 1, 8, 8), torch.zeros(2))
    assert _datamodule(RandomCrop()).on_after_batch_transfer(batch, 0) is batch
    dm = _datamodule(None)
    dm.trainer = SimpleNamespace(training=True)
    assert dm.on_after_batch_transfer(batch, 0) is batch


def test_datamodule_check_leaves_the_generator_stream_alone() -> None:
    checked, unchecked = RandomCrop(padding=2), RandomCrop(padding=2)
    _datamodule(checked)
    x = _images()
    assert torch.equal(checked(x), unchecked(x))


@pytest.mark.parametrize(
    ("make", "key"),
    [(lambda: _datamodule(ResizedCrop(size=[4, 4])), "augment: turns"),
     (lambda: _datamodule(RandomCrop(), shape=(1, 16)), "augment: this augmentation needs image batches"),
     (lambda: _datamodule(lambda x: x[:, :, :4]), "augment: turns"),
     (lambda: Compose({"crop": RandomCrop(), "blur": "blur"}), "augment.steps.blur"),
     (lambda: Compose([RandomCrop()]), "augment.steps: must map"),
     (lambda: GaussianBlur(kernel_size=4), "augment.kernel_size"),
     (lambda: RandomCrop(p=1.5), "augment.p"),
     (lambda: RandomAffine(scale=[1.2, 0.8]), "augment.scale")],
)
def test_bad_augmentations_are_config_errors(make, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value).startswith(key)


def test_unknown_augment_kind_is_a_config_error(compose) -> None:
    with pytest.raises(ConfigError, match="^augment=blurr: 'blurr' is not an option of group 'augment'"):
        compose("augment=blurr")
    with pytest.raises(ConfigError, match="^augment"):
        instantiate(compose("augment=standard", "augment.steps.crop._target_=labline.data.augment.Blurr").augment, "augment")


def test_an_ablation_can_drop_one_step_of_a_composite(compose) -> None:
    full = instantiate(compose("augment=standard").augment, "augment")
    without_noise = instantiate(compose("augment=standard", "augment.steps.noise=null").augment, "augment")
    assert list(full.steps) == ["crop", "affine", "noise"] and list(without_noise.steps) == ["crop", "affine"]
