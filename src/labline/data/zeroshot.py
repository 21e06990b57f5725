"""Class descriptions and the seen / unseen class split of zero-shot learning.

The processed data hold every class, described or not; which classes are
unseen is a property of the zero-shot task, not of the data split, so it is
decided here, over the ordinary train / val / test parts:

- training and validation use only seen classes (their train and val parts):
  an unseen class's images never reach the model before the test;
- the test part keeps every class: unseen ones for zero-shot accuracy, seen and
  unseen together for generalised zero-shot.

A class description is an attribute vector, spelled by the class name
(``data=shapes``) or read from a YAML file mapping class -> vector, or (with
``class_descriptions: text``) the sentence embedding of a class's text
description (``labline.data.text_descriptions``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labline.core.errors import ConfigError
from labline.data import text_descriptions
from labline.data.class_tables import read_class_table
from labline.data.datamodule import ArrayDataModule, Augment
from labline.data.pipeline import ProcessedData
from labline.data.shapes import class_attributes

KEY = "task.datamodule"
DESCRIPTION_SOURCES = ("attributes", "text")


@dataclass(frozen=True)
class ZeroShotClasses:
    """Every class's description and which classes are held out of training."""

    classes: list[str]
    attributes: list[str]
    descriptions: np.ndarray  # (classes, attributes) float32
    unseen: np.ndarray  # sorted class indices
    texts: list[str] | None = None  # each class's sentence, when the descriptions are text embeddings

    @property
    def seen(self) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.classes)), self.unseen)


def read_class_attributes(path: str, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """A user's descriptions: a YAML mapping each class name to a list of numbers, one per attribute."""
    key = f"{KEY}.class_attributes"
    vectors = read_class_table(path, classes, key, "vector", "class_name: [0, 1, 1, ...]")
    try:
        matrix = np.array(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{path}: vectors must be lists of numbers of one length") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        raise ConfigError(key, f"{path}: vectors must be non-empty lists of finite numbers of one length")
    return [f"attribute{i}" for i in range(matrix.shape[1])], matrix


def _covering(descriptions: np.ndarray, seen: np.ndarray) -> bool:
    """Whether the seen classes span every attribute's range, so unseen classes are new combinations of seen
    values (no attribute value, or binary attribute state, exists only in unseen classes)."""
    part = descriptions[seen]
    return bool(np.all(part.min(0) <= descriptions.min(0)) and np.all(part.max(0) >= descriptions.max(0)))


def choose_unseen(classes: Sequence[str], descriptions: np.ndarray, count: int, names: Sequence[str] | None,
                  seed: int) -> np.ndarray:
    """Indices of the unseen classes: the ``names`` given, else ``count`` classes drawn with ``seed``.

    A drawn class is kept only if the remaining seen classes still cover every attribute value, so any
    draw is a proper zero-shot split; named classes that break this are an error.
    """
    n = len(classes)
    if names is not None:
        return _named_unseen(classes, descriptions, names)
    key = f"{KEY}.unseen_count"
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count < n:
        raise ConfigError(key, f"{count!r} of {n} classes cannot be unseen: zero-shot needs seen and unseen classes",
                          f"1 .. {n - 1}")
    chosen: list[int] = []
    for c in np.random.default_rng(seed).permutation(n):
        if len(chosen) < count and _covering(descriptions, np.setdiff1d(np.arange(n), [*chosen, c])):
            chosen.append(int(c))
    if len(chosen) < count:
        raise ConfigError(key, f"only {len(chosen)} classes can be unseen while seen classes cover every attribute value",
                          f"1 .. {len(chosen)}, or more attribute combinations")
    return np.sort(np.array(chosen))


def _named_unseen(classes: Sequence[str], descriptions: np.ndarray, names: Sequence[str]) -> np.ndarray:
    key, n = f"{KEY}.unseen_classes", len(classes)
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(key, f"must be a list of class names or null, got {names!r}")
    unknown = [str(u) for u in names if str(u) not in classes]
    if unknown:
        raise ConfigError(key, f"unknown classes {unknown}", [*classes[:6], "..."] if n > 6 else classes)
    idx = np.unique([list(classes).index(str(u)) for u in names]).astype(int)
    if not 1 <= len(idx) < n:
        raise ConfigError(key, f"{len(idx)} of {n} classes unseen: zero-shot needs both seen and unseen classes",
                          f"1 .. {n - 1} class names")
    if not _covering(descriptions, np.setdiff1d(np.arange(n), idx)):
        raise ConfigError(key, "some attribute value occurs only in unseen classes, so training never sees it",
                          "unseen classes that recombine values of seen classes")
    return idx


def check_description_source(class_descriptions: str, class_texts: str | None, method: str) -> None:
    """Reject a description source the settings cannot use, before any sentence model is loaded.

    DAP scores a class by the probability of each of its attribute values, so it needs attributes in [0, 1];
    a sentence embedding is a real-valued direction. ``class_texts`` outside text mode would be silently unused.
    """
    if class_descriptions not in DESCRIPTION_SOURCES:
        raise ConfigError(f"{KEY}.class_descriptions", f"unknown source {class_descriptions!r}", DESCRIPTION_SOURCES)
    if class_descriptions == "text" and method == "dap":
        raise ConfigError("task.method", "dap predicts binary attributes; text descriptions are real-valued sentence "
                          "embeddings", "task.method=compat, or task.datamodule.class_descriptions=attributes")
    if class_texts and class_descriptions != "text":
        raise ConfigError(f"{KEY}.class_texts", "is read only with class_descriptions=text",
                          "task.datamodule.class_descriptions=text, or class_texts=null")


def _split_attributes(classes: Sequence[str], class_attributes_file: str | None) -> np.ndarray:
    """What the seen / unseen split must cover with text descriptions: the classes' attributes where they exist
    (the file, or names that spell them), so text and attribute runs with one ``split_seed`` hold out the same
    classes; else no columns, and any draw is valid (a sentence embedding has no attribute values to cover)."""
    if class_attributes_file:
        return read_class_attributes(class_attributes_file, classes)[1]
    try:
        return class_attributes(classes)[1]
    except ConfigError:
        return np.zeros((len(classes), 0), dtype=np.float32)


def zero_shot_classes(classes: Sequence[str], unseen_count: int, unseen_classes: Sequence[str] | None,
                      class_attributes_file: str | None, seed: int, class_descriptions: str = "attributes",
                      class_texts: str | None = None) -> ZeroShotClasses:
    """Descriptions (attribute vectors from the file or the class names, or sentence embeddings) and the checked
    seen / unseen split."""
    texts = None
    if class_descriptions == "text":
        texts = text_descriptions.class_sentences(classes, class_texts)
        split_basis = _split_attributes(classes, class_attributes_file)
        matrix = text_descriptions.embed(texts)
        names, source = [f"text{i}" for i in range(matrix.shape[1])], f"{KEY}.class_texts"
    else:
        names, matrix = (read_class_attributes(class_attributes_file, classes) if class_attributes_file
                         else class_attributes(classes))
        split_basis, source = matrix, f"{KEY}.class_attributes"
    _, first, counts = np.unique(matrix, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        twin = classes[int(first[np.argmax(counts > 1)])]
        raise ConfigError(source, f"several classes share the description of '{twin}': zero-shot cannot tell them apart",
                          "one distinct description per class")
    unseen = choose_unseen(classes, split_basis, unseen_count, unseen_classes, seed)
    return ZeroShotClasses(list(classes), names, matrix, unseen, texts)


class ZeroShotDataModule(ArrayDataModule):
    """Seen classes' train / val parts for training, the whole test part for evaluation.

    ``num_classes`` is the width of a class description: it is what the head predicts (attributes for
    DAP, a point in description space for the compatibility model); the task reads the classes from
    ``zero_shot``. ``unseen_classes`` names the held-out classes; without it ``unseen_count`` classes are drawn
    with ``split_seed``, so ``seed`` can vary training over one class split. ``class_descriptions`` picks
    attribute vectors or text embeddings (sentences from ``class_texts``, or written from shapes class names).
    ``method`` is the task's (the config interpolates ``task.method``): it is read only to reject text with DAP
    here, before a sentence model is loaded.
    """

    def __init__(self, data: ProcessedData, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 augment: Augment | None = None, unseen_count: int = 6, unseen_classes: Sequence[str] | None = None,
                 class_attributes: str | None = None, split_seed: int = 0, class_descriptions: str = "attributes",
                 class_texts: str | None = None, method: str = "compat"):
        check_description_source(class_descriptions, class_texts, method)
        self.zero_shot = zero_shot_classes(data.classes, unseen_count, unseen_classes, class_attributes, split_seed,
                                           class_descriptions, class_texts)
        seen = np.isin(data.y, self.zero_shot.seen)
        parts = {**data.parts, **{part: data.parts[part][seen[data.parts[part]]] for part in ("train", "val")}}
        super().__init__(dataclasses.replace(data, parts=parts), batch_size, num_workers, seed, augment)

    @property
    def num_classes(self) -> int:
        return len(self.zero_shot.attributes)
