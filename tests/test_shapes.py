"""The shapes dataset: deterministic per seed, classes are attribute combinations, names decode to attribute vectors."""

from __future__ import annotations

import numpy as np
import pytest

from labline.core.errors import ConfigError
from labline.data.shapes import class_attributes, describe, shapes

SMALL = {"per_class": 4, "image_size": 16}


def test_same_seed_same_images_other_seed_other_images() -> None:
    first, second, other = shapes(seed=3, **SMALL), shapes(seed=3, **SMALL), shapes(seed=4, **SMALL)
    assert np.array_equal(first.x, second.x) and np.array_equal(first.y, second.y)
    assert not np.array_equal(first.x, other.x)
    assert first.classes == other.classes


def test_one_class_per_attribute_combination() -> None:
    ds = shapes({"shape": ["square", "cross"], "size": ["small", "large"], "orientation": ["upright", "tilted"]}, **SMALL)
    assert len(ds.classes) == 8 and ds.classes[0] == "square|small|upright" and ds.classes[-1] == "cross|large|tilted"
    assert ds.x.shape == (32, 1, 16, 16) and ds.x.dtype == np.float32
    assert np.bincount(ds.y).tolist() == [4] * 8


def test_rendered_attributes_are_visible() -> None:
    """Bigger sizes cover more pixels; an outline covers fewer than the filled shape of the same size."""
    ds = shapes({"size": ["small", "medium", "large"], "fill": ["filled", "outline"]}, per_class=20, noise=0.0)
    ink = {name: float((ds.x[ds.y == c] > 0.3).sum(axis=(1, 2, 3)).mean()) for c, name in enumerate(ds.classes)}
    assert ink["small|filled"] < ink["medium|filled"] < ink["large|filled"]
    for size in ("small", "medium", "large"):
        assert ink[f"{size}|outline"] < 0.8 * ink[f"{size}|filled"]


def test_class_names_decode_to_one_hot_attribute_vectors() -> None:
    classes = shapes(per_class=1, image_size=12).classes
    names, matrix = class_attributes(classes)
    assert names == ["shape=circle", "shape=square", "shape=triangle", "shape=cross", "size=small", "size=medium",
                     "size=large", "fill=filled", "fill=outline"]
    row = matrix[classes.index("triangle|large|filled")]
    assert [names[i] for i in np.flatnonzero(row)] == ["shape=triangle", "size=large", "fill=filled"]
    assert (matrix.sum(1) == 3).all() and len(np.unique(matrix, axis=0)) == len(classes)
    assert describe(matrix, names) == classes


def test_unknown_values_are_attributes_named_by_position() -> None:
    names, matrix = class_attributes(["red|circle", "blue|circle", "red|square"])
    assert names == ["attribute0=red", "attribute0=blue", "shape=circle", "shape=square"]
    assert matrix.tolist() == [[1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]


def test_class_names_without_attributes_are_refused() -> None:
    with pytest.raises(ConfigError, match="do not spell attributes"):
        class_attributes(["0", "1", "2"])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"attributes": {"colour": ["red"]}}, "data.source.attributes.colour"),
     ({"attributes": {"shape": ["hexagon"]}}, "data.source.attributes.shape"),
     ({"attributes": {"shape": ["circle", "square"], "orientation": ["upright", "tilted"]}}, "orientation"),
     ({"attributes": {"shape": ["square"], "orientation": ["upright", "tilted"]}, "rotation": 30.0}, "data.source.rotation"),
     ({"image_size": 8}, "data.source.image_size"),
     ({"per_class": 0}, "data.source.per_class")],
)
def test_bad_settings_are_one_line_config_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        shapes(**kwargs)
    assert key in str(info.value) and "\n" not in str(info.value)
