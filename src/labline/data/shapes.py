"""Procedural shapes whose class is a combination of attribute values: a zero-shot benchmark generated from a seed.

Zero-shot learning needs classes that are described, not just named: an unseen
class must be a new combination of attribute values seen in training. Each
class here is one combination (shape x size x fill x orientation, each
configurable), and its name spells the combination, ``"triangle|large|filled"``,
so the processed data (which keeps only x, y and class names) still carries every
class's true attribute vector: ``class_attributes`` turns names back into one-hot
vectors, ``describe`` turns vectors back into names.

Each sample redraws its class's shape with its own nuisance: position, scale
(+-8%, so sizes never overlap), a small rotation, stroke intensity and pixel noise.
Rendering is vectorised: a gauge function (1 on the outline, < 1 inside) per
shape on a 2x supersampled grid, outlines by eroding the filled mask, then 2x2
averaging for anti-aliased edges.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from labline.core.errors import ConfigError
from labline.data.raw import RawDataset

# Every attribute a class can be built from and its possible values. Value names are unique across attributes,
# so a class name alone says which attribute each of its parts belongs to.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "cross", "bar"),
    "size": ("small", "medium", "large"),
    "fill": ("filled", "outline"),
    "orientation": ("upright", "tilted"),
}
DEFAULT_ATTRIBUTES = {"shape": ["circle", "square", "triangle", "cross"], "size": ["small", "medium", "large"],
                      "fill": ["filled", "outline"]}
SEPARATOR = "|"
# Radius of each size as a fraction of half the image; +-8% scale jitter keeps neighbouring sizes apart.
RADIUS = {"small": 0.35, "medium": 0.55, "large": 0.75}
SCALE_JITTER = 0.08
# Tilt of each orientation, in degrees. Every shape but the circle looks different at 0 and 45 degrees.
ANGLE = {"upright": 0.0, "tilted": 45.0}
# Half the angle between the two orientations: a larger rotation jitter would make them overlap.
MAX_ROTATION_WITH_ORIENTATION = 22.5
# The farthest point of any shape from its centre, in radii (a tilted square's corner), so shifts keep it inside.
EXTENT = 1.2
# Outline stroke width, in radii.
OUTLINE = 0.18
SUPERSAMPLE = 2
CHUNK = 1024


def _gauges(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A shape's gauge in its own frame (radius 1, upright): <= 1 inside; areas are close to the unit circle's."""
    if kind == "circle":
        return np.hypot(u, v)
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) / 0.85
    if kind == "triangle":  # equilateral, apex up, circumradius 1.15 (inradius 0.575)
        normals = ((0.0, -1.0), (np.sqrt(3) / 2, 0.5), (-np.sqrt(3) / 2, 0.5))
        return np.max([nu * u + nv * v for nu, nv in normals], axis=0) / 0.575
    if kind == "cross":  # two bars of half-width 0.38
        return np.minimum(np.maximum(np.abs(u), np.abs(v) / 0.38), np.maximum(np.abs(u) / 0.38, np.abs(v)))
    return np.maximum(np.abs(u), np.abs(v) / 0.35)  # bar: horizontal, half-width 0.35


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion of ``(N, H, W)`` masks by a 3x3 square, ``steps`` times (outside the image counts as empty)."""
    for _ in range(steps):
        padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
        h, w = mask.shape[1:]
        mask = np.logical_and.reduce([padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    return mask


def _check_attributes(attributes: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if not isinstance(attributes, Mapping) or not attributes:
        raise ConfigError("data.source.attributes", "must map attribute names to lists of values", list(ATTRIBUTES))
    checked: dict[str, list[str]] = {}
    for name, values in attributes.items():
        key = f"data.source.attributes.{name}"
        if name not in ATTRIBUTES:
            raise ConfigError(key, f"unknown attribute '{name}'", list(ATTRIBUTES))
        if isinstance(values, str) or not values or len(set(values)) != len(values):
            raise ConfigError(key, f"must be a non-empty list of distinct values, got {values!r}", ATTRIBUTES[name])
        unknown = [v for v in values if v not in ATTRIBUTES[name]]
        if unknown:
            raise ConfigError(key, f"unknown values {unknown}", ATTRIBUTES[name])
        checked[name] = [str(v) for v in values]
    if "orientation" in checked and "circle" in checked.get("shape", ["circle"]):
        raise ConfigError("data.source.attributes.orientation", "a circle looks the same at every orientation",
                          "shapes without circle, or no orientation attribute")
    return checked


def _number(value: float, key: str, low: float, high: float = np.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"data.source.{key}", f"must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def shapes(attributes: Mapping[str, Sequence[str]] | None = None, per_class: int = 100, image_size: int = 24,
           rotation: float = 15.0, noise: float = 0.1, seed: int = 0) -> RawDataset:
    """One class per combination of ``attributes`` values, ``per_class`` images ``(1, image_size, image_size)`` each.

    An attribute left out takes one value for every class (circle, medium, filled, upright): drawing it at
    random would make it a nuisance the class names do not mention. ``rotation`` is the per-sample rotation jitter in
    degrees, ``noise`` the std of Gaussian pixel noise on [0, 1] intensities.
    """
    chosen = _check_attributes(DEFAULT_ATTRIBUTES if attributes is None else attributes)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError("data.source.per_class", f"must be a positive integer, got {per_class!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 12:
        raise ConfigError("data.source.image_size", f"must be an integer >= 12, got {image_size!r}", "16, 24, 28, 32")
    high = MAX_ROTATION_WITH_ORIENTATION if "orientation" in chosen else 180.0
    rotation = _number(rotation, "rotation", 0.0, high)
    noise = _number(noise, "noise", 0.0)
    combos = list(itertools.product(*chosen.values()))
    classes = [SEPARATOR.join(combo) for combo in combos]
    spec = [dict(zip(chosen, combo, strict=True)) for combo in combos]
    y = np.repeat(np.arange(len(classes)), per_class)
    rng = np.random.default_rng(seed)
    x = np.concatenate([_render(rng, [spec[c] for c in y[i:i + CHUNK]], image_size, rotation, noise)
                        for i in range(0, len(y), CHUNK)])
    return RawDataset(x=x[:, None].astype(np.float32), y=y.astype(np.int64), classes=classes)


def _render(rng: np.random.Generator, specs: list[dict[str, str]], size: int, rotation: float, noise: float) -> np.ndarray:
    """``(n, size, size)`` images of the given attribute combinations, each with its own nuisance draws."""
    n, half = len(specs), size / 2
    radius = np.array([RADIUS[s.get("size", "medium")] for s in specs]) * half
    radius *= rng.uniform(1 - SCALE_JITTER, 1 + SCALE_JITTER, n)
    angle = np.deg2rad(np.array([ANGLE[s.get("orientation", "upright")] for s in specs]) + rng.uniform(-rotation, rotation, n))
    room = np.maximum(0.0, half - 1.0 - EXTENT * radius)
    centre = half + rng.uniform(-1.0, 1.0, (2, n)) * room
    contrast = rng.uniform(0.7, 1.0, n)
    grid = (np.arange(size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    dx = grid[None, None, :] - centre[0][:, None, None]
    dy = centre[1][:, None, None] - grid[None, :, None]  # rows grow downwards; the shape's frame has y up
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = (cos * dx + sin * dy) / radius[:, None, None], (cos * dy - sin * dx) / radius[:, None, None]
    inside = np.zeros(u.shape, dtype=bool)
    kinds = np.array([s.get("shape", "circle") for s in specs])
    for kind in np.unique(kinds):
        pick = kinds == kind
        inside[pick] = _gauges(str(kind), u[pick], v[pick]) <= 1.0
    outline = np.array([s.get("fill", "filled") == "outline" for s in specs])
    # Strokes scale with the shape, so a small cross's outline still has a hole.
    thickness = np.maximum(1, np.round(OUTLINE * radius * SUPERSAMPLE)).astype(int)
    for steps in np.unique(thickness[outline]):
        pick = outline & (thickness == steps)
        inside[pick] &= ~_erode(inside[pick], int(steps))
    image = inside.reshape(n, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4)) * contrast[:, None, None]
    return image + noise * rng.standard_normal(image.shape)


def class_attributes(classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Attribute vectors spelled by class names like ``"triangle|large|filled"``.

    Returns one name per vector dimension (``"shape=triangle"``) and a ``(classes, dims)`` matrix that is
    one-hot within each attribute. Parts are grouped by position; a position whose values labline's shapes
    do not know is still an attribute, named by its position (``"attribute3=red"``), so other datasets can
    spell their classes the same way.
    """
    parts = [str(c).split(SEPARATOR) for c in classes]
    widths = {len(p) for p in parts}
    if len(widths) != 1 or widths == {1}:
        sample = ", ".join(repr(c) for c in list(classes)[:3])
        raise ConfigError("data", f"class names ({sample}, ...) do not spell attributes",
                          "names like 'triangle|large|filled' (data=shapes), or task.datamodule.class_attributes: a YAML file")
    owner = {value: name for name, values in ATTRIBUTES.items() for value in values}
    names: list[str] = []
    columns: list[np.ndarray] = []
    for position, values in enumerate(zip(*parts, strict=True)):
        distinct = list(dict.fromkeys(values))  # first-appearance order
        owners = {owner.get(v) for v in distinct}
        group = owners.pop() if len(owners) == 1 else None
        if group is None or any(n.startswith(f"{group}=") for n in names):
            group = f"attribute{position}"
        for value in distinct:
            names.append(f"{group}={value}")
            columns.append(np.array([v == value for v in values], dtype=np.float32))
    return names, np.stack(columns, axis=1)


def describe(vectors: np.ndarray, names: Sequence[str]) -> list[str]:
    """The class names that ``vectors`` (rows as made by ``class_attributes``) stand for: the largest value per attribute."""
    groups: dict[str, list[int]] = {}
    for column, name in enumerate(names):
        groups.setdefault(name.split("=", 1)[0], []).append(column)
    values = np.asarray(vectors)
    picks = [[names[cols[int(np.argmax(row[cols]))]].split("=", 1)[1] for cols in groups.values()] for row in values]
    return [SEPARATOR.join(p) for p in picks]
