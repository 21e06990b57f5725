"""Digits drawn by a stroke generator and digitised the way scikit-learn's digits were: a cross-dataset pair.

scikit-learn's digits (UCI optdigits) are 32x32 bitmaps of digits written by 43 people, divided into
non-overlapping 4x4 blocks and each block's "on" pixels counted, giving 8x8 images of integers 0..16. Here
the same 32x32 -> 8x8 block counting is applied to digits drawn by a program: a fixed pen path per digit
(polylines in [-1, 1] coordinates), redrawn per sample with control-point wobble, a small affine change
(rotation, scale, shear, shift) and its own pen thickness, rendered with the glyph renderer
(``labline.data.glyphs``) and thresholded at half ink. The classes, image shape and value range are the
digits', the handwriting is not: a model trained on ``data=digits`` meets another distribution of the same
task (``shift=cross_dataset``, docs/distribution_shift.md).
"""

from __future__ import annotations

import numpy as np

from labline.core.errors import ConfigError
from labline.data.glyphs import _affines, _render
from labline.data.raw import RawDataset

BITMAP = 32
BLOCK = 4
CHUNK = 64


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 9) -> list[tuple[float, float]]:
    """Points of an elliptical arc, angles in degrees (0 = right, 90 = down: image coordinates)."""
    t = np.deg2rad(np.linspace(start, end, points))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


# Each digit's pen strokes, x right and y down.
STROKES: dict[str, list[list[tuple[float, float]]]] = {
    "0": [_arc(0, 0, 0.5, 0.8, 0, 360, 17)],
    "1": [[(-0.3, -0.45), (0.05, -0.8), (0.05, 0.8)]],
    "2": [_arc(0, -0.35, 0.45, 0.45, 200, 370) + [(-0.5, 0.8), (0.55, 0.8)]],
    "3": [_arc(0, -0.4, 0.42, 0.4, 200, 450), _arc(0, 0.4, 0.48, 0.4, 270, 520)],
    "4": [[(0.25, 0.8), (0.25, -0.8), (-0.55, 0.3), (0.6, 0.3)]],
    "5": [[(0.5, -0.8), (-0.4, -0.8), (-0.45, -0.05)] + _arc(0, 0.35, 0.5, 0.45, 240, 510)],
    "6": [_arc(0.3, 0.1, 0.8, 0.9, 250, 180, 6) + _arc(0, 0.4, 0.48, 0.4, 180, 540)],
    "7": [[(-0.5, -0.8), (0.55, -0.8), (-0.1, 0.8)]],
    "8": [_arc(0, -0.42, 0.38, 0.38, 90, 450), _arc(0, 0.38, 0.48, 0.42, -90, 270)],
    "9": [_arc(0, -0.4, 0.45, 0.4, 0, 360) + [(0.45, -0.4), (0.3, 0.8)]],
}


def _segments(strokes: list[list[tuple[float, float]]]) -> np.ndarray:
    return np.array([[a, b] for stroke in strokes for a, b in zip(stroke[:-1], stroke[1:], strict=False)], dtype=np.float64)


def stroke_digits(
    per_class: int = 100,
    wobble: float = 0.03,
    rotation: float = 10.0,
    scale: float = 0.1,
    shear: float = 0.2,
    shift: float = 0.08,
    thickness: tuple[float, float] = (1.6, 2.6),
    seed: int = 0,
) -> RawDataset:
    """``10 * per_class`` digits ``(N, 1, 8, 8)`` with integer values 0..16 (scikit-learn's digits' units), labels
    class-major; ``thickness`` is the pen radius range in pixels of the 32x32 bitmap, the jitter as in glyphs."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError("data.source.per_class", f"must be a positive integer, got {per_class!r}")
    if len(thickness) != 2 or not 0 < thickness[0] <= thickness[1]:
        raise ConfigError("data.source.thickness", f"must be [low, high] with 0 < low <= high, got {list(thickness)}")
    rng = np.random.default_rng(seed)
    templates = [_segments(STROKES[str(d)]) for d in range(10)]
    width = max(len(t) for t in templates)
    images = []
    for template in templates:
        # unused segment slots are parked far away (zero length there, so they draw nothing)
        padded = np.concatenate([template, np.full((width - len(template), 2, 2), 1e3)])
        wobbled = padded[None] + rng.normal(0.0, wobble, size=(per_class, width, 2, 2)) * (padded[None] < 1e2)
        moved = wobbled @ _affines(rng, per_class, rotation, scale, shear).transpose(0, 2, 1)[:, None]
        moved += rng.uniform(-shift, shift, size=(per_class, 1, 1, 2))
        radius = rng.uniform(*thickness, size=per_class).astype(np.float32)
        segments = moved.astype(np.float32)
        ink = np.concatenate(
            [_render(segments[i : i + CHUNK], radius[i : i + CHUNK], BITMAP) for i in range(0, per_class, CHUNK)]
        )
        bits = (ink >= 0.5).reshape(per_class, 8, BLOCK, 8, BLOCK)
        images.append(bits.sum(axis=(2, 4)).astype(np.float32))
    x = np.concatenate(images)[:, None]
    return RawDataset(x=x, y=np.repeat(np.arange(10, dtype=np.int64), per_class), classes=[str(d) for d in range(10)])
