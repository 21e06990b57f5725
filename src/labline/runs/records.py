"""What identifies a run and its results: config and split hashes, its name and options, provenance tags.

Two runs with equal ``config_hash`` ran the same experiment; with equal ``split_hash`` they were tested on
the same examples (what ensembles and comparisons check before combining them).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labline.core.config import flatten, to_plain
from labline.core.paths import config_dir
from labline.data.datamodule import DataModule
from labline.data.pipeline import ProcessedData
from labline.data.semi import labeled_tags

# The config groups whose chosen option names a run (and is logged as an ``option.<group>`` param).
NAMED_GROUPS = ("data", "backbone", "optimizer")


@cache
def _options(conf: Path, group: str) -> dict[str, dict[str, Any]]:
    return {path.stem: flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {})
            for path in sorted((conf / group).glob("*.yaml"))}


def option_name(cfg: DictConfig, group: str, conf: Path | None = None) -> str | None:
    """The ``conf/<group>/`` option a composed config's node came from, as the user typed it (``gru``, ``adamw``).

    A composed config (a ``params.yaml`` too) no longer says which option built it, and several options share a
    class (``gru`` and ``lstm`` both build ``RNN``, ``sgd``/``momentum``/``nesterov`` build ``torch.optim.SGD``):
    the option with the same ``_target_`` whose values agree with the node's most often wins. None: no node, or
    no option with its class (a ``_target_`` the user wrote on the command line)."""
    node = cfg.get(group)
    if not isinstance(node, DictConfig):
        return None
    values = flatten(to_plain(node))
    candidates = {name: sum(option.get(k) == v for k, v in values.items())
                  for name, option in _options((conf or config_dir()).resolve(), group).items()
                  if option.get("_target_") == values.get("_target_")}
    return max(candidates, key=lambda name: candidates[name]) if candidates else None


def option_names(cfg: DictConfig) -> dict[str, str]:
    """``option.<group>`` params: what a sweep's parallel-coordinates view and a run's name show."""
    found = {group: option_name(cfg, group) for group in NAMED_GROUPS if group != "data"}
    return {"option.data": str(cfg.data.name), **{f"option.{g}": name for g, name in found.items() if name}}


def _short(cfg: DictConfig, group: str) -> str:
    """The option's name, else the class's (lower case)."""
    return option_name(cfg, group) or str(cfg[group].get("_target_", group)).rsplit(".", 1)[-1].lower()


def default_run_name(cfg: DictConfig, kind: str = "") -> str:
    """``run_name`` if set, else ``[kind-]<dataset>-<backbone>-<optimizer>-seed<N>`` from the options' names; ``kind``
    tells runs of the same config apart (``dvc``, ``reproduce``: an ad-hoc run has none, a trial or a variant
    sets ``run_name``)."""
    if cfg.get("run_name"):
        return str(cfg.run_name)
    name = f"{cfg.data.name}-{_short(cfg, 'backbone')}-{_short(cfg, 'optimizer')}-seed{cfg.seed}"
    return f"{kind}-{name}" if kind else name


def split_hash(data: ProcessedData, datamodule: DataModule | None = None) -> str:
    """Identifies the test split: runs with equal hashes were tested on the same samples.

    A datamodule that regroups the samples (bags of instances) adds its ``test_signature()``: two MIL
    runs over the same test instances but different bags were not tested on the same examples."""
    signature = datamodule.test_signature() if datamodule is not None else b""
    return hashlib.sha256(data.fingerprint.encode() + data.parts["test"].tobytes() + signature).hexdigest()[:16]


def config_hash(config: dict[str, Any]) -> str:
    """Identifies a resolved config (run name excluded): equal hashes mean the same experiment."""
    keyed = {k: v for k, v in config.items() if k != "run_name"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_tags(cfg: DictConfig, data: ProcessedData, datamodule: DataModule | None = None) -> dict[str, str]:
    """What every run records of its data, whoever trained it (with few labels, which were kept: ``labeled_tags``)."""
    return {"seed": str(cfg.seed), "dataset": cfg.data.name, "data_md5": data.md5, "data_fingerprint": data.fingerprint,
            "split_hash": split_hash(data, datamodule), **labeled_tags(data)}
