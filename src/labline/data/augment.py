"""On-the-fly augmentation of training batches, written with torch ops only.

torchvision does not import next to the local torch build (PITFALLS.md), so
crops, affine warps, blur, noise and jitter are written here with
``affine_grid`` / ``grid_sample`` and ``conv2d``. Every augmentation:

- transforms a whole batch at once on the batch's device: the datamodule calls
  it in ``on_after_batch_transfer``, for the train split only;
- draws its per-sample parameters from its own ``torch.Generator`` seeded from
  the run's seed (``seed: ${seed}`` in the YAML), on the CPU, so the same seed
  gives the same augmentations on any device and the global RNG that drives
  shuffling and dropout is left alone;
- applies to each sample with probability ``p``.

A ``Compose`` hands its own generator to its steps, so a composite draws from
one stream whose seed is the composite's. The data reaching these transforms
are already normalised (``preprocess``), so intensities are not clamped to
[0, 1], and geometric transforms fill uncovered pixels by repeating the border
(the background of most images) rather than with zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from labline.core.errors import ConfigError
from labline.core.seeding import epoch_seed

GRID_PADDING = ("border", "zeros", "reflection")
PAD_MODES = ("replicate", "reflect", "constant", "circular")


class Augmentation:
    """Base class: ``__call__(batch)`` draws from the augmentation's generator; ``apply`` holds the transform."""

    def __init__(self, p: float = 1.0, seed: int = 0):
        if not 0.0 <= p <= 1.0:
            raise ConfigError("augment.p", f"must be a probability in [0, 1], got {p}")
        self.p = p
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        """Restart the stream at (seed, epoch): a resumed run draws what the uninterrupted one drew."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x, self.generator)

    def transform(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``apply`` to the whole batch, then keep the result for a random fraction ``p`` of the samples."""
        out = self.apply(x, generator)
        if self.p >= 1.0:
            return out
        chosen = _uniform(generator, len(x), 0.0, 1.0, x) < self.p
        return torch.where(chosen.view(-1, *[1] * (x.dim() - 1)), out, x)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class Compose(Augmentation):
    """Named steps in order, each with its own ``p``, drawing from the composite's generator.

    Steps are a mapping, not a list, so a config names them: ``augment.steps.crop.padding=2`` changes one,
    and an ablation removes one with ``augment.steps.noise=null``.
    """

    def __init__(self, steps: Mapping[str, Augmentation | None], seed: int = 0):
        super().__init__(p=1.0, seed=seed)
        if not isinstance(steps, Mapping):
            raise ConfigError("augment.steps", f"must map step names to augmentations, got a {type(steps).__name__}",
                              "steps: {crop: {_target_: ...}, noise: {_target_: ...}}")
        self.steps = {name: step for name, step in steps.items() if step is not None}
        for name, step in self.steps.items():
            if not isinstance(step, Augmentation):
                raise ConfigError(f"augment.steps.{name}", f"built a {type(step).__name__}, not an augmentation",
                                  "a node whose _target_ is a class of labline.data.augment")

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in self.steps.values():
            x = step.transform(x, generator)
        return x


class RandomCrop(Augmentation):
    """Pad every side by ``padding`` pixels, then cut a window of the original size at a random offset."""

    def __init__(self, padding: int = 1, mode: str = "replicate", p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        if not isinstance(padding, int) or padding < 0:
            raise ConfigError("augment.padding", f"must be a non-negative integer, got {padding!r}")
        self.padding, self.mode = padding, _choice("augment.mode", mode, PAD_MODES)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = _images(x).shape
        padded = F.pad(x, [self.padding] * 4, mode=self.mode)
        top = torch.randint(0, 2 * self.padding + 1, (n,), generator=generator).to(x.device)
        left = torch.randint(0, 2 * self.padding + 1, (n,), generator=generator).to(x.device)
        rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, channel, rows, cols]


class ResizedCrop(Augmentation):
    """A random window covering a fraction ``scale`` of the image with aspect ratio in ``ratio``, resized.

    Global crops cover most of the image (scale ~ [0.4, 1]), local crops a small part (scale ~ [0.05, 0.4]).
    ``size: null`` keeps the input size, which a single-view pipeline needs; a size gives multi-crop views.
    """

    def __init__(self, scale: Sequence[float] = (0.4, 1.0), ratio: Sequence[float] = (0.75, 4 / 3),
                 size: Sequence[int] | None = None, padding_mode: str = "border", p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        self.scale = _positive_range("augment.scale", scale, high=1.0)
        self.ratio = _positive_range("augment.ratio", ratio)
        if size is not None and (len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size)):
            raise ConfigError("augment.size", f"must be null or [height, width] in pixels, got {size!r}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.padding_mode = _choice("augment.padding_mode", padding_mode, GRID_PADDING)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = _images(x).shape
        area = _uniform(generator, n, *self.scale, x)
        log_ratio = _uniform(generator, n, math.log(self.ratio[0]), math.log(self.ratio[1]), x)
        width = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)
        height = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
        centre_x = (1.0 - width) * _uniform(generator, n, -1.0, 1.0, x)
        centre_y = (1.0 - height) * _uniform(generator, n, -1.0, 1.0, x)
        zero = torch.zeros_like(width)
        theta = torch.stack([torch.stack([width, zero, centre_x], 1), torch.stack([zero, height, centre_y], 1)], 1)
        return _warp(x, theta, self.size or (h, w), self.padding_mode)


class RandomAffine(Augmentation):
    """Rotation by up to ``degrees``, scaling by a factor in ``scale``, shift by up to ``translate`` of the size."""

    def __init__(self, degrees: float = 0.0, scale: Sequence[float] = (1.0, 1.0), translate: float = 0.0,
                 padding_mode: str = "border", p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        if not 0.0 <= degrees <= 180.0:
            raise ConfigError("augment.degrees", f"must be in [0, 180], got {degrees}")
        if not 0.0 <= translate <= 1.0:
            raise ConfigError("augment.translate", f"must be a fraction of the image size in [0, 1], got {translate}")
        self.degrees, self.translate = degrees, translate
        self.scale = _positive_range("augment.scale", scale)
        self.padding_mode = _choice("augment.padding_mode", padding_mode, GRID_PADDING)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``grid_sample`` maps each output pixel back into the input, so ``theta`` is the inverse warp.

        In pixel units around the centre the forward warp is ``u_out = s R(a) u_in + t``; the inverse,
        ``u_in = R(-a) (u_out - t) / s``, is moved into normalised [-1, 1] coordinates with
        ``D = diag(W/2, H/2)`` so that rotations stay rigid on non-square images.
        """
        n, c, h, w = _images(x).shape
        angle = torch.deg2rad(_uniform(generator, n, -self.degrees, self.degrees, x))
        factor = _uniform(generator, n, *self.scale, x)
        shift = torch.stack([_uniform(generator, n, -self.translate, self.translate, x) * w,
                             _uniform(generator, n, -self.translate, self.translate, x) * h], 1)
        cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
        inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # R(-a) / s
        half = torch.tensor([w / 2.0, h / 2.0], dtype=x.dtype, device=x.device)
        linear = inverse * half[None, None, :] / half[None, :, None]  # D^-1 (R(-a)/s) D
        offset = -(inverse @ shift[:, :, None]).squeeze(2) / half  # D^-1 (R(-a)/s) (-t)
        return _warp(x, torch.cat([linear, offset[:, :, None]], 2), (h, w), self.padding_mode)


class GaussianBlur(Augmentation):
    """Blur with a Gaussian of per-sample ``sigma`` (pixels), as a row pass and a column pass.

    ``kernel_size: null`` takes ``2 * ceil(3 * sigma_max) + 1``, wide enough to hold 99.7% of the
    kernel's mass. Borders are padded by repeating the edge, so a constant image stays constant.
    """

    def __init__(self, sigma: Sequence[float] = (0.1, 1.0), kernel_size: int | None = None, p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        self.sigma = _positive_range("augment.sigma", sigma)
        size = kernel_size if kernel_size is not None else 2 * math.ceil(3 * self.sigma[1]) + 1
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ConfigError("augment.kernel_size", f"must be a positive odd integer or null, got {kernel_size!r}")
        self.kernel_size = size

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = _images(x).shape
        sigma = _uniform(generator, n, *self.sigma, x)
        row = gaussian_kernel1d(sigma, self.kernel_size).to(x.dtype).repeat_interleave(c, 0)  # one kernel per (sample, channel)
        half = self.kernel_size // 2
        flat = F.pad(x.reshape(1, n * c, h, w), [half] * 4, mode="replicate")
        flat = F.conv2d(flat, row[:, None, None, :], groups=n * c)
        flat = F.conv2d(flat, row[:, None, :, None], groups=n * c)
        return flat.reshape(n, c, h, w)


class GaussianNoise(Augmentation):
    """Adds ``std * N(0, 1)`` to every value, in the units of the normalised data."""

    def __init__(self, std: float = 0.1, p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        if std < 0:
            raise ConfigError("augment.std", f"must be >= 0, got {std}")
        self.std = std

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + self.std * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)


class BrightnessContrast(Augmentation):
    """Brightness: add a shift in ``[-brightness, brightness]``; contrast: scale each sample around its own mean
    by a factor in ``[1 - contrast, 1 + contrast]``. Additive brightness, because the data are normalised."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        if brightness < 0:
            raise ConfigError("augment.brightness", f"must be >= 0, got {brightness}")
        if not 0.0 <= contrast <= 1.0:
            raise ConfigError("augment.contrast", f"must be in [0, 1], got {contrast}")
        self.brightness, self.contrast = brightness, contrast

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = (-1, *[1] * (x.dim() - 1))
        shift = _uniform(generator, len(x), -self.brightness, self.brightness, x).view(shape)
        factor = _uniform(generator, len(x), 1.0 - self.contrast, 1.0 + self.contrast, x).view(shape)
        mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        return (x - mean) * factor + mean + shift


def gaussian_kernel2d(sigma: torch.Tensor | float, size: int) -> torch.Tensor:
    """``G(x, y) = exp(-(x^2 + y^2) / (2 sigma^2)) / (2 pi sigma^2)`` on a ``size x size`` grid, normalised to sum 1.

    Returns ``(N, size, size)`` for ``N`` sigmas. Normalising on the grid (not relying on the constant) keeps a
    truncated kernel's mean intensity: a constant image stays constant.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1)
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    squared = coords[None, :, None] ** 2 + coords[None, None, :] ** 2
    kernel = torch.exp(-squared / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    return (kernel / kernel.sum(dim=(1, 2), keepdim=True)).float()


def gaussian_kernel1d(sigma: torch.Tensor | float, size: int) -> torch.Tensor:
    """The row (= column) pass of ``gaussian_kernel2d``: its marginal, ``(N, size)``.

    The 2-D Gaussian factorises, ``G(x, y) = g(x) g(y)``, so the normalised 2-D kernel is the outer product of
    its normalised marginals; two 1-D passes cost 2k instead of k^2 multiplies per pixel.
    """
    return gaussian_kernel2d(sigma, size).sum(dim=1)


def _warp(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int], padding_mode: str) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), [len(x), x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _uniform(generator: torch.Generator, n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    """``n`` draws from U(low, high) on the CPU generator, moved to ``like``'s device and dtype."""
    return (low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)).to(like.device, like.dtype)


def _images(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4:
        raise ConfigError("augment", f"this augmentation needs image batches (N, C, H, W), got shape {tuple(x.shape)}",
                          "augment=none, noise or jitter for non-image data")
    return x


def _positive_range(key: str, value: Sequence[float], high: float = math.inf) -> tuple[float, float]:
    if len(value) != 2 or not 0.0 < value[0] <= value[1] <= high:
        raise ConfigError(key, f"must be [min, max] with 0 < min <= max <= {high:g}, got {list(value)}")
    return float(value[0]), float(value[1])


def _choice(key: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ConfigError(key, f"unknown mode '{value}'", valid)
    return value
