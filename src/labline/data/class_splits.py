"""Class-disjoint splits: whole classes go to train (base), val or test (novel).

Few-shot evaluation asks whether a model recognises classes it has never seen,
so no class may have samples in two parts: base classes train the embedding,
validation classes pick the checkpoint, novel classes are tested once. The
split YAML says ``disjoint_classes: true``, which tells ``split_dataset`` not to
demand every class in every part, as it does for sample-level splits.
"""

from __future__ import annotations

import numpy as np

from labline.core.errors import ConfigError

Parts = dict[str, np.ndarray]


def _class_count(value: float, key: str, total: int) -> int:
    """A count of classes (an integer >= 1) or a fraction of them (a number in (0, 1)); at least one class."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"must be a fraction in (0, 1) or a number of classes, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(key, f"must name at least one class, got {value}", f"1 .. {total - 2}, or a fraction in (0, 1)")
        return value
    if not 0.0 < value < 1.0:
        raise ConfigError(key, f"a fraction must lie in (0, 1), got {value}", "a fraction in (0, 1), or an integer count")
    return max(1, round(value * total))


def class_split(y: np.ndarray, val: float = 0.15, novel: float = 0.25, seed: int = 0, name: str = "classes",
                disjoint_classes: bool = True) -> Parts:
    """Seeded base / validation / novel class sets; ``val`` and ``novel`` are fractions or counts of the classes,
    the base (train) classes are the rest."""
    if disjoint_classes is not True:
        raise ConfigError("split.disjoint_classes", "a class split never has a class in two parts", "true")
    classes = np.unique(y)
    n_val, n_novel = _class_count(val, "split.val", len(classes)), _class_count(novel, "split.novel", len(classes))
    if n_val + n_novel >= len(classes):
        raise ConfigError("split", f"{n_val} validation + {n_novel} novel classes leave no base classes out of "
                          f"{len(classes)}", "smaller split.val / split.novel, or a dataset with more classes")
    order = np.random.default_rng(seed).permutation(classes)
    novel_classes, val_classes, base_classes = order[:n_novel], order[n_novel:n_novel + n_val], order[n_novel + n_val:]
    return {part: np.flatnonzero(np.isin(y, chosen))
            for part, chosen in (("train", base_classes), ("val", val_classes), ("test", novel_classes))}
