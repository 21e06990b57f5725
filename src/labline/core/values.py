"""Checks of run-wide values that need nothing but the composed config, so ``labline train`` reports them in
one line before Hydra makes a run folder, before the heavy imports (Lightning alone takes seconds) and before
any MLflow run exists. The run checks them again where it uses them (a params file, a sweep's trial)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labline.core.errors import ConfigError

# 2**32 - 1: numpy's seeds are 32-bit, and seed_everything refuses anything larger.
MAX_SEED = 2**32 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_threads(threads: Any) -> int:
    if not _is_int(threads) or threads < 1:
        raise ConfigError("threads", f"must be a positive integer, got {threads!r}", "1 .. number of cores")
    return threads


def check_seed(seed: Any) -> int:
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ConfigError("seed", f"must be an integer in 0 .. {MAX_SEED}, got {seed!r}")
    return seed


def check_epochs(trainer: Any) -> None:
    """``max_epochs`` 0 trains nothing (and then fails to find a checkpoint); -1 is Lightning's "forever". The
    same for ``limit_train_batches``/``limit_val_batches`` 0: no training step, or no validation value for the
    best checkpoint and early stopping to choose by."""
    if not isinstance(trainer, (dict, DictConfig)):
        return
    epochs = trainer.get("max_epochs")
    if epochs is not None and (not _is_int(epochs) or epochs < 1):
        raise ConfigError("trainer.max_epochs", f"must be a positive number of epochs, got {epochs!r}", "1, 30, 100")
    for key in ("limit_train_batches", "limit_val_batches"):
        limit = trainer.get(key)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0):
            raise ConfigError(f"trainer.{key}", f"must be a positive fraction or number of batches, got {limit!r}",
                              "0.5 (half the batches), 10 (ten batches), 1.0 (all)")


def writable(folder: Path) -> bool:
    """A real write, not ``os.access`` (which says yes to root everywhere, /proc and read-only mounts included)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_writable(path: Path, key: str, valid: str) -> None:
    """``path`` can be created or written: its nearest existing folder takes a file. A read-only project (a
    shared checkout, a read-only mount) otherwise fails with a traceback when Hydra makes the run folder."""
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if not folder.is_dir() or not writable(folder):
        raise ConfigError(key, f"{path} cannot be created: {folder.resolve()} is not writable", valid)


def check_source_paths(source: Any) -> None:
    """The file (``path``) or folder (``root``) of a ``data.source`` exists: the commonest mistake with one's own
    data, reported in a second rather than after the imports a data source needs."""
    if not isinstance(source, DictConfig):
        return
    path, root = (OmegaConf.select(source, key, default=None, throw_on_missing=False) for key in ("path", "root"))
    if isinstance(path, str) and not Path(path).is_file():
        raise ConfigError(path, "file not found", "data.source.path=<an existing file>")
    if isinstance(root, str) and not Path(root).is_dir():
        raise ConfigError("data.source.root", f"{root} is not a folder", "a folder with one subfolder per class")


def check_values(cfg: DictConfig) -> None:
    """Every check of this module on a composed training config."""
    check_threads(cfg.get("threads", 2))
    check_seed(cfg.get("seed", 0))
    check_epochs(cfg.get("trainer"))
    data = cfg.get("data")
    check_source_paths(data.get("source") if isinstance(data, DictConfig) else None)
