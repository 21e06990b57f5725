"""Image corruptions at five severities, for evaluating a trained model on a covariate-shifted test set.

Hendrycks & Dietterich (2019, "Benchmarking neural network robustness to common corruptions and
perturbations", ImageNet-C) corrupt the clean test images with fixed functions at five increasing
severities and report the accuracy per corruption and severity. These are those functions for labline's
small images, on a batch ``(N, C, H, W)`` of floats in [0, 1] (the caller maps a dataset's value range
there and back), each result clipped to [0, 1] as ImageNet-C clips:

- ``GaussianNoise``: ``x + c * N(0, 1)`` per pixel, ``c`` the noise std;
- ``GaussianBlur``: a Gaussian filter of std ``c`` pixels (kornia), edges replicated (ImageNet-C's
  ``skimage`` filter repeats the nearest pixel too);
- ``Contrast``: ``(x - m) * c + m`` with ``m`` each image's per-channel mean;
- ``Rotation``: by ``c`` degrees about the centre, clockwise or not per image (kornia), zeros filled in;
- ``Translation``: by ``c`` times the image side, in a random direction per image (kornia), zeros filled in.

ImageNet-C's parameters are for 224-pixel images; their CIFAR-10-C set rescales them for 32 pixels, and
its values for blur and contrast are the defaults here (conf/shift/corruptions.yaml); the noise keeps
ImageNet-C's stds (CIFAR-10-C's weaker ones leave small digits unchanged). Rotation and translation are
not ImageNet-C corruptions (they are among its "-P" perturbations); their five magnitudes are labline's,
the shift a fraction of the image side so that it scales with the image. Every value is configurable.

Severity 0 is the clean image. Random draws (noise, rotation signs, shift directions) come from the
generator the caller passes, so a seed gives the same corrupted images every time; a corruption draws the
same way at every severity, so only the magnitude changes from one severity to the next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from labline.core.errors import ConfigError


class Corruption:
    """One corruption: the parameter of each severity (1 .. len(severities)), applied by ``apply``."""

    def __init__(self, severities: Sequence[float]):
        values = list(severities)
        if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values):
            raise ConfigError(
                "shift.corruptions.corruptions.*.severities",
                f"must be a list of non-negative numbers, one per severity, got {values!r}",
                "[0.1, 0.2, ...]",
            )
        self.severities = [float(v) for v in values]

    def __call__(self, x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
        """``x`` corrupted at ``severity`` (0: a copy of the clean images), clipped to [0, 1]."""
        if not 0 <= severity <= len(self.severities):
            raise ConfigError("severity", f"{severity} is out of range", f"0 .. {len(self.severities)}")
        if severity == 0:
            return x.clone()
        return self.apply(x, self.severities[severity - 1], generator).clamp(0.0, 1.0)

    def apply(self, x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class GaussianNoise(Corruption):
    """Additive Gaussian noise of std ``level`` (in [0, 1] intensity units)."""

    def apply(self, x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
        return x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype)


class GaussianBlur(Corruption):
    """A Gaussian filter of std ``level`` pixels over a kernel of ``2 * ceil(3 * level) + 1`` pixels."""

    def apply(self, x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        if level == 0:
            return x
        size = 2 * math.ceil(3 * level) + 1
        return gaussian_blur2d(x, (size, size), (level, level), border_type="replicate")


class Contrast(Corruption):
    """Contrast scaled by ``level`` (< 1 lowers it) around each image's per-channel mean."""

    def apply(self, x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        return (x - mean) * level + mean


def _signs(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1


class Rotation(Corruption):
    """Rotation by ``level`` degrees about the image centre, the direction drawn per image."""

    def apply(self, x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
        from kornia.geometry.transform import rotate

        angle = (_signs(len(x), generator) * level).to(x.dtype)
        return rotate(x, angle, padding_mode="zeros")


class Translation(Corruption):
    """Translation by ``level`` times the image side, in a direction drawn uniformly per image."""

    def apply(self, x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
        from kornia.geometry.transform import translate

        theta = torch.rand(len(x), generator=generator) * 2 * math.pi
        side = float(max(x.shape[-2:]))
        shift = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1) * level * side
        return translate(x, shift.to(x.dtype), padding_mode="zeros")
