"""Small file helpers every layer shares: JSON records, checked ``.npz`` arrays, content hashes.

Readers raise ``ConfigError`` naming the file: a corrupt or truncated file must stop a command before it
trains, not halfway through it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from labline.core.errors import ConfigError


def write_json(obj: object, path: Path) -> None:
    """Sorted, indented JSON (diffs stay small; DVC metrics files are read by people too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, remedy: str) -> Any:
    if not path.is_file():
        raise ConfigError(str(path), "not found", remedy)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(str(path), "is not valid JSON", remedy) from None


def md5_file(path: Path) -> str:
    """The md5 DVC records for a file output."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_npz(path: Path, keys: tuple[str, ...], remedy: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles), after checking that ``keys`` are among them."""
    if not path.exists():
        raise ConfigError(str(path), "file not found", remedy)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise ConfigError(str(path), f"is missing arrays {missing}", remedy)
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(path), f"is corrupt or truncated ({type(exc).__name__})", remedy) from None
