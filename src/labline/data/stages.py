"""The data pipeline: prepare -> split -> preprocess.

DVC runs these as stages that write files; ``labline train`` outside DVC
calls the same functions and reuses the processed file when its fingerprint
matches the config, so both paths produce identical arrays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from labline.building import build
from labline.data import files
from labline.data.sources import RawDataset
from labline.errors import ConfigError


@dataclass
class ProcessedData:
    """Normalised arrays of the whole dataset plus the split indices."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    parts: dict[str, np.ndarray]
    fingerprint: str
    md5: str


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def fingerprint(cfg: DictConfig) -> str:
    """Hash of everything that decides the processed arrays."""
    keys = {"data": {k: _plain(cfg.data.get(k)) for k in ("name", "source")}, "split": _plain(cfg.split),
            "preprocess": _plain(cfg.preprocess)}
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _paths(cfg: DictConfig, root: Path) -> tuple[Path, Path, Path]:
    name = cfg.data.name
    return (root / cfg.paths.raw / f"{name}.npz", root / cfg.paths.splits / name, root / cfg.paths.processed / f"{name}.npz")


def load_source(cfg: DictConfig) -> RawDataset:
    ds = build(cfg.data.source, "data.source")
    files.check_arrays(ds.x, ds.y, f"data={cfg.data.name}")
    return ds


def split_dataset(cfg: DictConfig, y: np.ndarray) -> dict[str, np.ndarray]:
    parts = build(cfg.split, "split", y=y)
    for part in files.SPLIT_PARTS:
        if len(parts[part]) == 0:
            raise ConfigError("split", f"the {part} split is empty", "larger fractions or more data")
    classes = set(np.unique(y).tolist())
    for part in files.SPLIT_PARTS:
        missing = sorted(classes - set(np.unique(y[parts[part]]).tolist()))
        if missing:
            raise ConfigError("split", f"classes {missing} have no samples in the {part} split",
                              "stratify=true, larger fractions, or more data per class")
    return parts


def preprocess_dataset(cfg: DictConfig, ds: RawDataset, parts: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    norm = build(cfg.preprocess, "preprocess").fit(ds.x[parts["train"]])
    return norm.transform(ds.x), norm.state


def stage_prepare(cfg: DictConfig, root: Path) -> Path:
    raw, _, _ = _paths(cfg, root)
    files.write_raw(load_source(cfg), raw)
    return raw


def stage_split(cfg: DictConfig, root: Path) -> Path:
    raw, split_dir, _ = _paths(cfg, root)
    ds = files.read_raw(raw)
    files.write_split(split_dataset(cfg, ds.y), split_dir)
    return split_dir


def stage_preprocess(cfg: DictConfig, root: Path) -> Path:
    raw, split_dir, processed = _paths(cfg, root)
    ds = files.read_raw(raw)
    parts = files.read_split(split_dir, len(ds.y))
    x, state = preprocess_dataset(cfg, ds, parts)
    processed.parent.mkdir(parents=True, exist_ok=True)
    np.savez(processed, x=x, y=ds.y, classes=np.array(ds.classes), fingerprint=np.array(fingerprint(cfg)))
    files.write_json(state, processed.parent / f"{cfg.data.name}.stats.json")
    return processed


def load_processed(cfg: DictConfig, root: Path) -> ProcessedData:
    """The processed file when it matches ``cfg`` (the DVC path), else the same steps in memory."""
    _, split_dir, processed = _paths(cfg, root)
    fp = fingerprint(cfg)
    if processed.exists() and split_dir.exists():
        arrays = files.load_npz(processed, ("x", "y", "classes", "fingerprint"), "re-run `dvc repro preprocess`")
        if str(arrays["fingerprint"]) == fp:
            x, y = arrays["x"], arrays["y"].astype(np.int64)
            files.check_arrays(x, y, str(processed))
            parts = files.read_split(split_dir, len(y))
            return ProcessedData(x, y, [str(c) for c in arrays["classes"]], parts, fp, files.md5_file(processed))
    ds = load_source(cfg)
    parts = split_dataset(cfg, ds.y)
    x, _ = preprocess_dataset(cfg, ds, parts)
    md5 = hashlib.md5(x.tobytes() + ds.y.tobytes()).hexdigest()
    return ProcessedData(x, ds.y, ds.classes, parts, fp, md5)
