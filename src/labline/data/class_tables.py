"""A user's YAML file mapping every class name to a value (attribute vector, sentence), read with one-line errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from labline.core.errors import ConfigError


def read_class_table(path: str, classes: Sequence[str], key: str, entry: str, example: str) -> list[Any]:
    """The file's value for each of ``classes``, in that order; ``entry`` names what a value is ("sentence")
    and ``example`` shows one line of a valid file. Checking the values themselves is the caller's."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(key, f"file not found: {path}", f"a YAML file mapping class name -> {entry}")
    try:
        table = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"{path} is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(table, dict):
        raise ConfigError(key, f"{path} must map class names to {entry}s", example)
    table = {str(k): v for k, v in table.items()}
    missing = [c for c in classes if c not in table]
    if missing:
        raise ConfigError(key, f"{path} has no {entry} for classes {missing[:5]}", "one entry per class of the dataset")
    return [table[c] for c in classes]
