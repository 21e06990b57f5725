"""The parent run that groups a study's runs (cross-validation folds, ablation variants) and lets it resume.

A study is re-opened, not duplicated: the same command finds its latest parent carrying the study's tags
(that ``reopen`` accepts) and continues it; children that already FINISHED are matched by their
``config_hash`` tag and not trained again. Children name their parent with the ``mlflow.parentRunId``
tag, so they nest the same way in this process and in spawned worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labline.core.instantiate import instantiate
from labline.tracking.lifecycle import PARENT_TAG, RunHandle, open_run


def child_tags(parent: RunHandle, **tags: str) -> dict[str, str]:
    return {PARENT_TAG: parent.run_id, **tags}


@contextmanager
def study_parent(cfg: DictConfig, root: Path, name: str, config: dict[str, Any], tags: dict[str, str],
                 reopen: Callable[[Any], bool]) -> Iterator[RunHandle]:
    """Open the study's parent: the latest run carrying ``tags`` that ``reopen`` accepts, else a new one (nested
    under whatever study contains this one). Ends FINISHED, FAILED or KILLED like every run."""
    destination = instantiate(cfg.logger, "logger")
    store = destination.store
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    previous = [r for r in store.search(query, [store.experiment_id(destination.experiment_name)]) if reopen(r)]
    with open_run(store, destination.experiment_name, name, tags=tags, config=config, root=root,
                  run_id=previous[-1].info.run_id if previous else None) as parent:
        yield parent
