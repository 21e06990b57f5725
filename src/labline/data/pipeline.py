"""The data pipeline: prepare -> split -> preprocess.

DVC runs these as stages that write files; ``labline train`` outside DVC
calls the same functions and reuses the processed file when its fingerprint
matches the config, so both paths produce identical arrays.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from labline.core.errors import ConfigError, warn_once
from labline.core.instantiate import instantiate
from labline.core.io import load_npz, write_json
from labline.data import files, integrity
from labline.data.preprocess import Normaliser
from labline.data.raw import RawDataset, check_arrays, check_dataset


@dataclass
class ProcessedData:
    """Normalised arrays of the whole dataset plus the split indices."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    parts: dict[str, np.ndarray]
    fingerprint: str
    md5: str


FOLD_KEYS = ("fold", "refit")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def fingerprint(cfg: DictConfig) -> str:
    """Hash of everything that decides the processed arrays (``split.refit`` decides which runs follow, not the data)."""
    split = {k: v for k, v in _plain(cfg.split).items() if k != "refit"}
    keys = {"data": {k: _plain(cfg.data.get(k)) for k in ("name", "source")}, "split": split,
            "preprocess": _plain(cfg.preprocess)}
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_resampling(cfg: DictConfig) -> bool:
    """Whether ``cfg.split`` trains once per fold (k-fold and friends) rather than once on a hold-out."""
    target = cfg.split.get("_target_")
    try:
        split = get_object(target)
    except Exception:
        raise ConfigError("split._target_", f"cannot import '{target}'", "an importable split function") from None
    return bool(getattr(split, "resampling", False))


def with_fold(cfg: DictConfig, fold: int | str) -> DictConfig:
    """A copy of ``cfg`` that trains on one fold (an index, or ``all`` for every non-test sample)."""
    chosen = copy.deepcopy(cfg)
    OmegaConf.update(chosen, "split.fold", fold, force_add=True)
    return chosen


def _selector(cfg: DictConfig) -> int | str | None:
    """The fold a resampling config trains on (``None`` for a hold-out split)."""
    if not is_resampling(cfg):
        return None
    fold = cfg.split.get("fold")
    if fold is None:
        raise ConfigError("split.fold", f"a {cfg.split.get('name', 'resampling')} split trains one model per fold: "
                          "`labline train` does that; a single run needs a fold", "0 .. k-1, or all")
    if fold != "all" and (not isinstance(fold, int) or isinstance(fold, bool) or fold < 0):
        raise ConfigError("split.fold", f"must be a fold index or all, got {fold!r}", "0 .. k-1, or all")
    return fold


def dataset_name(cfg: DictConfig) -> str:
    """``data.name``; a dataset without one (own files) is named after its file, so it needs that file."""
    name = cfg.data.get("name")
    if name is None:
        raise ConfigError("data.source.path", "is not set, and the dataset has no data.name to go by",
                          "data.source.path=FILE (the dataset is named after it) or data.name=NAME")
    return str(name)


def _raw(cfg: DictConfig, root: Path) -> Path:
    return root / cfg.paths.raw / f"{dataset_name(cfg)}.npz"


def _paths(cfg: DictConfig, root: Path) -> tuple[Path, Path]:
    """Split folder and processed file of the data ``cfg`` trains on (per fold for resampling splits)."""
    name = dataset_name(cfg)
    splits, processed = root / cfg.paths.splits / name, root / cfg.paths.processed
    fold = _selector(cfg)
    if fold is None:
        return splits, processed / f"{name}.npz"
    return splits / f"fold_{0 if fold == 'all' else fold}", processed / f"{name}.fold_{fold}.npz"


def load_source(cfg: DictConfig) -> RawDataset:
    ds = instantiate(cfg.data.source, "data.source")
    check_dataset(ds, f"data={cfg.data.name}")
    return ds


def _check_parts(parts: dict[str, np.ndarray], y: np.ndarray, where: str, every_class_in: tuple[str, ...]) -> None:
    for part in files.SPLIT_PARTS:
        if len(parts[part]) == 0:
            raise ConfigError("split", f"the {part} split{where} is empty", "larger fractions or more data")
    classes = set(np.unique(y).tolist())
    for part in every_class_in:
        missing = sorted(classes - set(np.unique(y[parts[part]]).tolist()))
        if missing:
            raise ConfigError("split", f"classes {missing} have no samples in the {part} split{where}",
                              "stratify=true, larger fractions, or more data per class")


def _given_split(cfg: DictConfig, part: np.ndarray | None) -> dict[str, np.ndarray]:
    """``part=`` for a split that keeps the dataset's own split (``split=given``); a data set with its own split
    split another way gets a warning, since its results no longer match the published ones."""
    if getattr(get_object(cfg.split._target_), "given", False):
        if part is None:
            raise ConfigError("split", f"data={cfg.data.name} comes without a split of its own to keep",
                              "holdout, kfold, stratified_kfold, ...; or x_train/x_test arrays, a CSV split column, "
                              "train/ and test/ image folders")
        return {"part": part}
    if part is not None:
        warn_once("split", f"data={cfg.data.name} comes with its own train/test split; split={cfg.split.get('name')} "
                  "draws a new one", "split=given keeps it")
    return {}


def all_folds(cfg: DictConfig, y: np.ndarray, part: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """Every fold of the split (one for a hold-out), checked: no empty part, every class trained on and tested.

    A fold's validation part may lack classes (leave-one-out validates on one sample); a hold-out's may not,
    unless its YAML says ``disjoint_classes: true`` (few-shot: each class lies in exactly one part).
    ``part`` is the dataset's own split, if it has one.
    """
    is_resampling(cfg)  # an unimportable split._target_ is one line naming the key
    node = OmegaConf.create({k: v for k, v in _plain(cfg.split).items() if k not in FOLD_KEYS})
    result = instantiate(node, "split", y=y, **_given_split(cfg, part))
    if not isinstance(result, list):
        _check_parts(result, y, "", () if cfg.split.get("disjoint_classes") else files.SPLIT_PARTS)
        return [result]
    for i, parts in enumerate(result):
        _check_parts(parts, y, f" of fold {i}", ("train", "test"))
    return result


def refit_parts(fold: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All training data of a resampling split: any fold's train and val together, nothing to validate on, the same test."""
    return {"train": np.sort(np.concatenate([fold["train"], fold["val"]])), "val": fold["val"][:0], "test": fold["test"]}


def _select(cfg: DictConfig, folds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    fold = _selector(cfg)
    if fold is None:
        return folds[0]
    if fold == "all":
        return refit_parts(folds[0])
    if fold >= len(folds):
        raise ConfigError("split.fold", f"there are {len(folds)} folds, got fold {fold}", f"0 .. {len(folds) - 1}, or all")
    return folds[fold]


def split_dataset(cfg: DictConfig, y: np.ndarray, part: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The parts ``cfg`` trains on: the hold-out, or the fold that ``split.fold`` selects."""
    return _select(cfg, all_folds(cfg, y, part))


def fold_count(cfg: DictConfig, root: Path) -> int:
    """How many models a resampling split trains (the dataset's labels decide it for leave-one-out)."""
    ds = load_raw(cfg, root)
    return len(all_folds(cfg, ds.y, ds.part))


def load_raw(cfg: DictConfig, root: Path) -> RawDataset:
    """The raw dataset: ``prepare``'s file when there is one, else the source itself."""
    raw = _raw(cfg, root)
    return files.read_raw(raw) if raw.exists() else load_source(cfg)


def _imputed(ds: RawDataset, train: np.ndarray) -> np.ndarray:
    """Missing values (NaN) filled with the statistic of the training part only (``data.source.missing``)."""
    if ds.impute is None:
        return ds.x
    from sklearn.impute import SimpleImputer

    flat = ds.x.reshape(len(ds.x), -1)
    imputer = SimpleImputer(strategy=ds.impute, keep_empty_features=True).fit(flat[train])
    return imputer.transform(flat).astype(np.float32).reshape(ds.x.shape)


def fitted_preprocess(cfg: DictConfig, ds: RawDataset, parts: dict[str, np.ndarray]) -> tuple[np.ndarray, Normaliser]:
    """The raw arrays with missing values filled, and the normaliser fitted on the train part: what
    ``preprocess_dataset`` applies, kept apart so that shifted raw test images get the same preprocessing."""
    x = _imputed(ds, parts["train"])
    return x, instantiate(cfg.preprocess, "preprocess").fit(x[parts["train"]])


def preprocess_dataset(cfg: DictConfig, ds: RawDataset, parts: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    x, norm = fitted_preprocess(cfg, ds, parts)
    return norm.transform(x), norm.state


def _read_parts(cfg: DictConfig, split_dir: Path, n_samples: int) -> dict[str, np.ndarray]:
    parts = files.read_split(split_dir, n_samples)
    return refit_parts(parts) if _selector(cfg) == "all" else parts


def stage_prepare(cfg: DictConfig, root: Path) -> Path:
    raw = _raw(cfg, root)
    files.write_raw(load_source(cfg), raw)
    return raw


def stage_split(cfg: DictConfig, root: Path) -> Path:
    """Index files: ``<splits>/<name>/{train,val,test}.txt``, or one ``fold_<i>/`` folder per fold."""
    split_root = root / cfg.paths.splits / dataset_name(cfg)
    ds = files.read_raw(_raw(cfg, root))
    folds = all_folds(cfg, ds.y, ds.part)
    shutil.rmtree(split_root, ignore_errors=True)  # a previous split kind's files must not be read as this one's
    if not is_resampling(cfg):
        files.write_split(folds[0], split_root)
        return split_root
    for i, parts in enumerate(folds):
        files.write_split(parts, split_root / f"fold_{i}")
    return split_root


def _run_configs(cfg: DictConfig, root: Path) -> list[DictConfig]:
    """One config per processed file: the hold-out, or each fold plus ``all`` (the refit's data)."""
    if not is_resampling(cfg):
        return [cfg]
    n = len(list((root / cfg.paths.splits / dataset_name(cfg)).glob("fold_*")))
    if n == 0:
        raise ConfigError(str(root / cfg.paths.splits / dataset_name(cfg)), "has no fold_<i> folders",
                          "run `labline stage split` or `dvc repro split`")
    return [with_fold(cfg, fold) for fold in [*range(n), "all"]]


def stage_preprocess(cfg: DictConfig, root: Path) -> Path:
    """Processed arrays per hold-out or fold, normalised with statistics fitted on that fold's train part only."""
    ds = files.read_raw(_raw(cfg, root))
    for run_cfg in _run_configs(cfg, root):
        split_dir, processed = _paths(run_cfg, root)
        x, state = preprocess_dataset(run_cfg, ds, _read_parts(run_cfg, split_dir, len(ds.y)))
        processed.parent.mkdir(parents=True, exist_ok=True)
        np.savez(processed, x=x, y=ds.y, classes=np.array(ds.classes), fingerprint=np.array(fingerprint(run_cfg)))
        write_json(state, processed.with_suffix(".stats.json"))
    return processed.parent


# What ``preload`` loaded, waiting for the run's own ``load_processed`` of the same config (taken once).
_preloaded: dict[str, ProcessedData] = {}


def _load_key(cfg: DictConfig, root: Path) -> str:
    return json.dumps([str(root.resolve()), fingerprint(cfg), _plain(cfg.split), _plain(cfg.paths)], sort_keys=True, default=str)


def preload(cfg: DictConfig, root: Path) -> None:
    """Load and check what ``cfg`` will train on, before the training stack is imported: a corrupt file, labels of
    the wrong shape or a split that cannot be made is then one line in about a second, not after Lightning's
    import. The run's own ``load_processed`` of the same config takes this result instead of loading again."""
    if is_resampling(cfg) and cfg.split.get("fold") is None:
        cfg = with_fold(cfg, 0)  # cross-validation trains fold 0 first
    _preloaded.clear()
    _preloaded[_load_key(cfg, root)] = load_processed(cfg, root)


def load_processed(cfg: DictConfig, root: Path) -> ProcessedData:
    """The processed file when it matches ``cfg`` (the DVC path), else the same steps in memory."""
    if _preloaded and (found := _preloaded.pop(_load_key(cfg, root), None)) is not None:
        return found
    split_dir, processed = _paths(cfg, root)
    fp = fingerprint(cfg)
    if processed.exists() and split_dir.exists():
        arrays = load_npz(processed, ("x", "y", "classes", "fingerprint"), "re-run `dvc repro preprocess`")
        if str(arrays["fingerprint"]) == fp:
            integrity.verify(root, [processed, split_dir])
            x, y = arrays["x"], arrays["y"].astype(np.int64)
            check_arrays(x, y, str(processed))
            parts = _read_parts(cfg, split_dir, len(y))
            return ProcessedData(x, y, [str(c) for c in arrays["classes"]], parts, fp, arrays_md5(x, y))
    ds = load_source(cfg)
    parts = split_dataset(cfg, ds.y, ds.part)
    x, _ = preprocess_dataset(cfg, ds, parts)
    return ProcessedData(x, ds.y, ds.classes, parts, fp, arrays_md5(x, ds.y))


def arrays_md5(x: np.ndarray, y: np.ndarray) -> str:
    """``data_md5``: the processed arrays' content, whether a run read them from DVC's file or made them in memory
    (the file's own md5 would differ from the same arrays made in memory, and with the npz container's format)."""
    digest = hashlib.md5(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()
