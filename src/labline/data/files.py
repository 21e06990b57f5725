"""Reading and writing the files the data stages hand to each other.

Every reader checks what it reads (missing, truncated, wrong content, NaN)
and raises ``ConfigError`` naming the file, because a corrupt data file
must stop a run before training, not halfway through it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from labline.data.sources import RawDataset
from labline.errors import ConfigError

SPLIT_PARTS = ("train", "val", "test")


def md5_file(path: Path) -> str:
    """The md5 DVC records for a file output."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_npz(path: Path, keys: tuple[str, ...], remedy: str) -> dict[str, np.ndarray]:
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


def write_raw(ds: RawDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=ds.x, y=ds.y, classes=np.array(ds.classes))


def read_raw(path: Path) -> RawDataset:
    arrays = load_npz(path, ("x", "y", "classes"), "run `labline stage prepare` or `dvc repro prepare`")
    x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64)
    check_arrays(x, y, str(path))
    return RawDataset(x=x, y=y, classes=[str(c) for c in arrays["classes"]])


def check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Shape and value checks every dataset must pass before it is split."""
    if x.ndim < 2 or len(x) != len(y):
        raise ConfigError(where, f"inputs {x.shape} and labels {y.shape} do not match", "x of shape (N, ...), y of (N,)")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise ConfigError(where, f"{bad} samples contain NaN or inf", "finite values only")
    if len(y) == 0:
        raise ConfigError(where, "contains no samples")


def write_split(parts: dict[str, np.ndarray], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for part in SPLIT_PARTS:
        np.savetxt(folder / f"{part}.txt", parts[part], fmt="%d")


def read_split(folder: Path, n_samples: int) -> dict[str, np.ndarray]:
    parts: dict[str, np.ndarray] = {}
    for part in SPLIT_PARTS:
        path = folder / f"{part}.txt"
        if not path.exists():
            raise ConfigError(str(path), "split index file not found", "run `labline stage split` or `dvc repro split`")
        try:
            idx = np.atleast_1d(np.loadtxt(path, dtype=np.int64))
        except ValueError:
            raise ConfigError(str(path), "is not a list of integer indices") from None
        if idx.size and (idx.min() < 0 or idx.max() >= n_samples):
            raise ConfigError(str(path), f"indices outside 0..{n_samples - 1}", "re-run the split stage")
        parts[part] = idx
    return parts


def write_json(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
