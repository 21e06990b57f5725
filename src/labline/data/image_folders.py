"""Image folders as datasets: ``<root>/<class>/<image>.png`` (or ``.jpg``), decoded by Pillow.

The prepare stage decodes every file once into the raw array file (``data/raw/<name>.npz``, cached by DVC), so
no training decodes an image. A root holding ``train/`` and ``test/`` (and optionally ``val/``) folders, each with
one folder per class, is the dataset's own split: ``split=given`` keeps it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from labline.core.errors import ConfigError
from labline.data.raw import PARTS, RawDataset, check_dataset

MODES = {"L": 1, "RGB": 3}
EXTENSIONS = (".png", ".jpg", ".jpeg")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _decode(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(str(path), f"is not a readable image ({type(exc).__name__})", "PNG or JPEG files") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _images(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in EXTENSIONS)
        files += found
        labels += [label] * len(found)
    return files, labels


def image_folder(root: str, size: list[int] | int = 32, mode: str = "L") -> RawDataset:
    """One class per subfolder of ``root`` (names sorted), images resized to ``size`` (side, or [height, width])
    in Pillow ``mode`` (``L``: 1 channel, ``RGB``: 3); pixel values 0..255."""
    folder = Path(root)
    if not folder.is_dir():
        raise ConfigError("data.source.root", f"{root} is not a folder", "a folder with one subfolder per class")
    if mode not in MODES:
        raise ConfigError("data.source.mode", f"unknown channel mode '{mode}'", MODES)
    side = [size, size] if isinstance(size, int) else list(size)
    if len(side) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in side):
        raise ConfigError("data.source.size", f"must be a positive side or [height, width], got {size!r}", "32 or [32, 48]")
    given = [p for p in PARTS if (folder / p).is_dir()]
    sources = [folder / p for p in given] if "train" in given else [folder]
    classes = [p.name for p in _class_folders(sources[0])]
    if not classes:
        raise ConfigError("data.source.root", f"{sources[0]} has no class subfolders", "<root>/<class>/<image>.png")
    files, labels, part = [], [], []
    for source in sources:
        extra = sorted({p.name for p in _class_folders(source)} - set(classes))
        if extra:
            raise ConfigError(str(source), f"class folders {extra} are not in {sources[0]}", classes)
        found, found_labels = _images(source, classes)
        files, labels, part = files + found, labels + found_labels, part + [source.name] * len(found)
    if not files:
        raise ConfigError("data.source.root", f"no {'/'.join(EXTENSIONS)} files under {root}", "<root>/<class>/<image>.png")
    x = np.stack([_decode(f, (side[0], side[1]), mode) for f in files])
    ds = RawDataset(x=x, y=np.array(labels, dtype=np.int64), classes=classes,
                    part=np.array(part) if len(sources) > 1 else None)
    check_dataset(ds, root)
    return ds
