"""Building a run's parts without training, so a value a builder rejects is reported before any MLflow run
exists: what studies call on each distinct config before they open their parent."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from labline.data.semi import load_training_data
from labline.runs.assembly import prepare_run
from labline.runs.runtime import setup_runtime


def check_build(cfg: DictConfig, root: Path) -> None:
    """Data, model, optimizer, callbacks and trainer, built and dropped. Lightning's start-up notices are silenced:
    nothing trains here. A task with a ``runner`` builds its own parts, and checks them before its own run opens;
    here its runtime settings and data (split, fold, preprocessing) are checked."""
    if cfg.task.get("runner"):
        setup_runtime(cfg)
        load_training_data(cfg, root)
        return
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepare_run(cfg, Path(tmp), root)
    finally:
        logger.setLevel(level)
