"""Procedural scenes for semantic segmentation: several shapes on a varying background, a class per pixel.

Segmentation needs a target per pixel, and a benchmark that needs nothing downloaded. Each scene is a
canvas with a random linear-gradient background, ``objects`` shapes (circle, square, triangle, cross, the
renderers of ``labline.data.shapes``) at random positions, sizes, rotations and intensities, painted in
order (a later shape occludes an earlier one), then Gaussian pixel noise. The mask holds the class of the
shape that owns each pixel, 0 for background.

The mask is the per-sample target ``y`` of shape ``(N, H, W)``, not an extra array: the pipeline already
carries ``y`` through prepare -> split -> preprocess with its images, indexes it with the split, and
normalises only ``x``, so masks are split with their images and never normalised, with no second code path.
A split that stratifies by label cannot stratify masks: use ``split.stratify=false`` (the experiments do).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labline.core.errors import ConfigError
from labline.data.raw import RawDataset
from labline.data.shapes import _gauges

BACKGROUND = "background"
SHAPES = ("circle", "square", "triangle", "cross")
# Object radius as a fraction of the canvas side: small enough for several objects, large enough to see at 32 px.
RADIUS = (0.1, 0.22)


def _positive_int(value: int, key: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"data.source.{key}", f"must be an integer >= {low}, got {value!r}")
    return value


def scenes(n: int = 1000, image_size: int = 32, objects: Sequence[int] = (1, 3), shapes: Sequence[str] = SHAPES,
           noise: float = 0.1, seed: int = 0) -> RawDataset:
    """``n`` scenes ``(1, image_size, image_size)`` with masks ``(image_size, image_size)`` of class indices.

    ``objects`` is the ``[min, max]`` number of shapes per scene; the classes are ``background`` then
    ``shapes`` in the given order. ``noise`` is the std of Gaussian pixel noise on [0, 1] intensities.
    """
    n = _positive_int(n, "n")
    size = _positive_int(image_size, "image_size", 16)
    if len(objects) != 2 or not 1 <= int(objects[0]) <= int(objects[1]):
        raise ConfigError("data.source.objects", f"must be [min, max] with 1 <= min <= max, got {list(objects)}", "[1, 3]")
    unknown = [s for s in shapes if s not in SHAPES]
    if not shapes or unknown or len(set(shapes)) != len(shapes):
        raise ConfigError("data.source.shapes", f"must be distinct shapes, got {list(shapes)}", SHAPES)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ConfigError("data.source.noise", f"must be a number >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    grid = (np.arange(size) + 0.5) / size  # pixel centres in [0, 1]
    gx, gy = grid[None, None, :], grid[None, :, None]
    # Background: a level plus a linear gradient in a random direction, so no intensity threshold finds the objects.
    level, slope, theta = rng.uniform(0.0, 0.35, n), rng.uniform(-0.3, 0.3, n), rng.uniform(0, 2 * np.pi, n)
    image = (level[:, None, None] + slope[:, None, None] * ((gx - 0.5) * np.cos(theta)[:, None, None]
                                                          + (gy - 0.5) * np.sin(theta)[:, None, None]))
    mask = np.zeros((n, size, size), dtype=np.int64)
    count = rng.integers(int(objects[0]), int(objects[1]) + 1, n)
    for slot in range(int(objects[1])):
        kind = rng.integers(0, len(shapes), n)
        radius = rng.uniform(*RADIUS, n)[:, None, None]
        cx, cy = (rng.uniform(0.15, 0.85, (2, n)))[:, :, None, None]
        angle = rng.uniform(0, 2 * np.pi, n)[:, None, None]
        intensity = rng.uniform(0.6, 1.0, n)[:, None, None]
        dx, dy = gx - cx, cy - gy
        u = (np.cos(angle) * dx + np.sin(angle) * dy) / radius
        v = (np.cos(angle) * dy - np.sin(angle) * dx) / radius
        inside = np.zeros(u.shape, dtype=bool)
        for k, name in enumerate(shapes):
            pick = kind == k
            inside[pick] = _gauges(name, u[pick], v[pick]) <= 1.0
        inside &= (slot < count)[:, None, None]
        image = np.where(inside, intensity, image)
        mask = np.where(inside, kind[:, None, None] + 1, mask)
    image = image + noise * rng.standard_normal(image.shape)
    return RawDataset(x=image[:, None].astype(np.float32), y=mask, classes=[BACKGROUND, *shapes])
