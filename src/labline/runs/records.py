"""What identifies a run and its results: config and split hashes, its name, metric names, provenance tags.

Two runs with equal ``config_hash`` ran the same experiment; with equal ``split_hash`` they were tested on
the same examples (what ensembles and comparisons check before combining them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig

from labline.data.datamodule import DataModule
from labline.data.pipeline import ProcessedData
from labline.data.semi import labeled_tags

# Test metrics keep the names DVC metrics files and earlier runs use.
METRIC_NAMES = {"test/acc": "test_accuracy", "test/f1_macro": "test_f1_macro", "test/loss": "test_loss"}


def test_metric_name(key: str) -> str:
    """``test/acc`` -> ``test_accuracy``; any other ``test/x`` -> ``test_x``."""
    return METRIC_NAMES.get(key, key.replace("/", "_"))


def default_run_name(cfg: DictConfig) -> str:
    if cfg.get("run_name"):
        return str(cfg.run_name)
    backbone = str(cfg.backbone.get("_target_", "model")).rsplit(".", 1)[-1]
    optimizer = str(cfg.optimizer.get("_target_", "opt")).rsplit(".", 1)[-1]
    return f"{cfg.data.name}-{backbone}-{optimizer}-seed{cfg.seed}"


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
