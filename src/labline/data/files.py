"""Reading and writing the files the data stages hand to each other.

Every reader checks what it reads (missing, truncated, wrong content, NaN)
and raises ``ConfigError`` naming the file, because a corrupt data file
must stop a run before training, not halfway through it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labline.core.errors import ConfigError
from labline.core.io import load_npz
from labline.data.raw import RawDataset, check_dataset

SPLIT_PARTS = ("train", "val", "test")


def write_raw(ds: RawDataset, path: Path) -> None:
    """The decoded dataset, with its given split (``part``) and impute strategy when it has them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {k: np.array(v) for k, v in (("part", ds.part), ("impute", ds.impute)) if v is not None}
    np.savez(path, x=ds.x, y=ds.y, classes=np.array(ds.classes), **extra)


def read_raw(path: Path) -> RawDataset:
    arrays = load_npz(path, ("x", "y", "classes"), "run `labline stage prepare` or `dvc repro prepare`")
    ds = RawDataset(x=arrays["x"].astype(np.float32), y=arrays["y"].astype(np.int64),
                    classes=[str(c) for c in arrays["classes"]],
                    part=arrays["part"].astype(str) if "part" in arrays else None,
                    impute=str(arrays["impute"]) if "impute" in arrays else None)
    check_dataset(ds, str(path))
    return ds


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
