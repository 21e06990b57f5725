"""The best trial as a ready-to-run experiment: ``labline train experiment=<study>_<storage>_best``.

Named per study and storage (``prune_optuna_best`` for study ``prune`` in the project's ``optuna.db``): two
studies of one name in two storages (a local try, the cluster's PostgreSQL) never overwrite each other's file.

The file names every config-group option the trial used and only the values
that differ from what those options compose to, so it reads like a
hand-written experiment and keeps interpolations (``${optimizer.lr}``) intact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labline.core.config import flatten

# Choices that are not components of the experiment itself.
NOT_COMPONENTS = ("experiment", "hparams_search")


def storage_label(storage: str) -> str:
    """A short name of an Optuna storage: a SQLite or journal file's stem, else the server's host and database."""
    from urllib.parse import urlsplit

    if "://" not in storage or storage.startswith("sqlite"):
        return Path(urlsplit(storage).path if "://" in storage else storage).stem
    parts = urlsplit(storage)
    return f"{parts.hostname}_{parts.path.strip('/')}"


def experiment_name(study_name: str, storage: str) -> str:
    """``storage``: the study's storage URL or journal file, as the sweep prints it."""
    return re.sub(r"[^\w-]", "_", f"{study_name}_{storage_label(storage)}") + "_best"


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """Config-group options of a composed config (with its ``hydra`` node), Hydra's own groups excluded."""
    return {group: str(option) for group, option in cfg.hydra.runtime.choices.items()
            if option is not None and not group.startswith("hydra/") and group not in NOT_COMPONENTS}


def _job_values(cfg: DictConfig) -> dict[str, Any]:
    job = OmegaConf.to_container(cfg, resolve=False)
    job.pop("hydra", None)
    return flatten(job)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def experiment_yaml(name: str, header: Sequence[str], trial_cfg: DictConfig, base_cfg: DictConfig) -> str:
    """``trial_cfg``: the trial's composed config; ``base_cfg``: ``conf/`` composed with the same group options only."""
    base = _job_values(base_cfg)
    changed = {k: v for k, v in _job_values(trial_cfg).items() if k not in base or base[k] != v}
    # Tuning never touches the test split; the chosen configuration is trained and tested once.
    changed.update(run_name=name, test_after_fit=True)
    body = {"defaults": [{f"override /{g}": option} for g, option in group_choices(trial_cfg).items()], **_nest(changed)}
    comments = "".join(f"# {line}\n" for line in header)
    return f"# @package _global_\n{comments}{OmegaConf.to_yaml(body)}"


def write_experiment(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path
