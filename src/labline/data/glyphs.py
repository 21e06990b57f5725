"""Procedural handwritten-like glyphs: an Omniglot stand-in generated from a seed.

Few-shot learning needs many classes (hundreds) with few samples each, so that
base, validation and novel class sets can all be large and disjoint. Omniglot
cannot be downloaded here; these glyphs play its role. Each class is a fixed
set of pen strokes (smooth cubic Bezier curves whose control points follow a
random walk); each sample redraws the class's strokes with its own wobble
(noise on the control points), a small affine change (rotation, scale, shear,
shift) and pen thickness. Rendering is an anti-aliased distance field to the
strokes' line segments, vectorised over a chunk of samples at once.

Class templates and per-sample jitter come from separate seeded streams, so
asking for more samples per class does not change which glyph a class is.
"""

from __future__ import annotations

import numpy as np

from labline.core.errors import ConfigError
from labline.data.raw import RawDataset

# Points sampled along each Bezier stroke; the stroke is drawn as the polyline through them.
CURVE_POINTS = 8
# Samples rendered together: bounds the (chunk, pixels, segments) distance array to a few MB, which stays in cache.
CHUNK = 32
# Where unused stroke slots are parked, so their distance to every pixel is huge.
FAR = 1e3


def _check(value: float, key: str, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (high is not None and value > high):
        upper = f" and <= {high}" if high is not None else ""
        raise ConfigError(f"data.source.{key}", f"must be a number >= {low}{upper}, got {value!r}")


def _bernstein() -> np.ndarray:
    """``(CURVE_POINTS, 4)`` cubic Bezier basis: curve points as weights of the 4 control points."""
    t = np.linspace(0.0, 1.0, CURVE_POINTS)[:, None]
    return np.concatenate([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], axis=1)


def _templates(rng: np.random.Generator, classes: int, max_strokes: int, min_strokes: int) -> tuple[np.ndarray, np.ndarray]:
    """Control points ``(classes, max_strokes, 4, 2)`` in [-1, 1] coordinates, and which stroke slots are used.

    Each stroke's control points are a random walk with a turning heading. Every glyph is then centred and
    scaled so its drawn strokes span 55-75% of the image, as a written character fills its box; a
    Bezier curve follows its control points under any affine map, so this is done on the control points.
    """
    start = rng.uniform(-0.5, 0.5, size=(classes, max_strokes, 1, 2))
    heading = rng.uniform(0, 2 * np.pi, size=(classes, max_strokes, 1)) + np.cumsum(
        rng.normal(0.0, 1.0, size=(classes, max_strokes, 3)), axis=-1)
    step = rng.uniform(0.25, 0.5, size=(classes, max_strokes, 3, 1))
    moves = step * np.stack([np.cos(heading), np.sin(heading)], axis=-1)
    points = np.concatenate([start, start + np.cumsum(moves, axis=2)], axis=2)
    used = np.arange(max_strokes)[None, :] < rng.integers(min_strokes, max_strokes + 1, size=(classes, 1))
    drawn = np.einsum("pk,cskd->cspd", _bernstein(), points)
    mask = used[:, :, None, None]
    lo, hi = np.where(mask, drawn, np.inf).min(axis=(1, 2)), np.where(mask, drawn, -np.inf).max(axis=(1, 2))  # (classes, 2)
    zoom = rng.uniform(1.1, 1.5, size=classes) / np.maximum((hi - lo).max(axis=1), 1e-3)
    return (points - ((lo + hi) / 2)[:, None, None, :]) * zoom[:, None, None, None], used


def _affines(rng: np.random.Generator, n: int, rotation: float, scale: float, shear: float) -> np.ndarray:
    """``(n, 2, 2)`` rotation @ shear @ scale matrices, one per sample."""
    angle = np.deg2rad(rng.uniform(-rotation, rotation, n))
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shr = np.tile(np.eye(2), (n, 1, 1))
    shr[:, 0, 1] = rng.uniform(-shear, shear, n)
    zoom = rng.uniform(1 - scale, 1 + scale, (n, 2))
    return rot @ shr * zoom[:, None, :]


def _render(segments: np.ndarray, thickness: np.ndarray, size: int) -> np.ndarray:
    """Ink per pixel, ``(n, size, size)`` in [0, 1], from line segments ``(n, S, 2, 2)`` and pen radii ``(n,)`` (in pixels).

    Ink falls from 1 to 0 over one pixel around the pen's edge, which anti-aliases thin strokes. The x and
    y components are kept in separate arrays: reductions over a trailing axis of length 2 are several times
    slower in numpy than element-wise arithmetic.
    """
    pixel = 2.0 / size
    centres = (np.arange(size, dtype=np.float32) + 0.5) * pixel - 1.0
    grid_x, grid_y = np.tile(centres, size)[None, :, None], np.repeat(centres, size)[None, :, None]  # (1, P, 1), row-major
    ax, ay = segments[:, None, :, 0, 0], segments[:, None, :, 0, 1]  # (n, 1, S)
    dx, dy = segments[:, None, :, 1, 0] - ax, segments[:, None, :, 1, 1] - ay
    px, py = grid_x - ax, grid_y - ay  # (n, P, S)
    t = np.clip((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    ex, ey = px - t * dx, py - t * dy
    distance = np.sqrt((ex * ex + ey * ey).min(-1))  # (n, P)
    ink = np.clip((thickness[:, None] * pixel - distance) / pixel + 0.5, 0.0, 1.0)
    return ink.reshape(len(segments), size, size)


def glyphs(classes: int = 400, samples: int = 20, size: int = 28, min_strokes: int = 1, max_strokes: int = 4,
           wobble: float = 0.04, rotation: float = 10.0, scale: float = 0.1, shear: float = 0.15, shift: float = 0.08,
           thickness: tuple[float, float] = (0.7, 1.3), seed: int = 0) -> RawDataset:
    """``classes`` x ``samples`` glyph images ``(N, 1, size, size)`` with values in [0, 1], labels class-major.

    ``wobble`` is the standard deviation of the control-point noise and ``shift`` the largest translation,
    both as fractions of the image's half-width; ``rotation`` is in degrees, ``scale`` and ``shear`` are
    relative; ``thickness`` is the range of the pen's radius in pixels at 28x28 (scaled with ``size``).
    """
    for key, value in (("classes", classes), ("samples", samples), ("size", size), ("min_strokes", min_strokes),
                       ("max_strokes", max_strokes), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
            raise ConfigError(f"data.source.{key}", f"must be a positive integer, got {value!r}")
    if size < 8:
        raise ConfigError("data.source.size", f"{size} pixels cannot show a stroke pattern", "8 or more, e.g. 16 or 28")
    if min_strokes > max_strokes:
        raise ConfigError("data.source.min_strokes", f"{min_strokes} exceeds max_strokes={max_strokes}")
    for key, value, high in (("wobble", wobble, 0.5), ("rotation", rotation, 180), ("scale", scale, 0.5),
                             ("shear", shear, 1.0), ("shift", shift, 0.5)):
        _check(value, key, 0.0, high)
    if len(thickness) != 2 or not 0 < thickness[0] <= thickness[1]:
        raise ConfigError("data.source.thickness", f"must be [low, high] with 0 < low <= high, got {list(thickness)}")

    points, used = _templates(np.random.default_rng([seed, 0]), classes, max_strokes, min_strokes)
    rng = np.random.default_rng([seed, 1])
    n = classes * samples
    control = np.repeat(points, samples, axis=0) + rng.normal(0.0, wobble, size=(n, *points.shape[1:]))
    curves = np.einsum("pk,nskd->nspd", _bernstein(), control)  # (n, strokes, CURVE_POINTS, 2)
    curves = curves @ _affines(rng, n, rotation, scale, shear).transpose(0, 2, 1)[:, None]
    curves += rng.uniform(-shift, shift, size=(n, 1, 1, 2))
    curves[~np.repeat(used, samples, axis=0)] = FAR
    segments = np.stack([curves[:, :, :-1], curves[:, :, 1:]], axis=3).reshape(n, -1, 2, 2).astype(np.float32)
    radius = (rng.uniform(*thickness, size=n) * size / 28).astype(np.float32)
    x = np.concatenate([_render(segments[i:i + CHUNK], radius[i:i + CHUNK], size) for i in range(0, n, CHUNK)])
    width = len(str(classes - 1))
    return RawDataset(x=x[:, None].astype(np.float32), y=np.repeat(np.arange(classes, dtype=np.int64), samples),
                      classes=[f"g{c:0{width}d}" for c in range(classes)])
