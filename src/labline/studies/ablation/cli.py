"""``labline ablate`` and ``labline report``: Hydra-style ``key=value`` words in, an ablation table out."""

from __future__ import annotations

from labline.core.errors import ConfigError
from labline.core.paths import workspace_root
from labline.tracking.store import Store


def ablate(argv: list[str]) -> None:
    """``labline ablate ablation=NAME [seeds=[0,1]] [design=...] [components=[a,b]] [training overrides]``."""
    from labline.studies.ablation.runner import run_ablation
    from labline.studies.ablation.spec import load

    spec, parent = load(argv)
    if spec is None or parent is not None:
        raise ConfigError("parent", "names a study for `labline report`; `labline ablate` runs one", "ablation=NAME")
    run_ablation(spec, workspace_root())


def _latest_parent(store: Store, name: str) -> str:
    found = store.search(f"tags.role = 'ablation' and tags.ablation = '{name}'")
    if not found:
        raise ConfigError(f"ablation={name}", f"has no study in the MLflow store {store.uri}",
                          f"run `labline ablate ablation={name}` first")
    return found[-1].info.run_id


def report(argv: list[str]) -> None:
    """``labline report ablation=NAME`` (its latest study) or ``parent=RUN_ID``: the table from MLflow alone."""
    from labline.studies.ablation.spec import load
    from labline.studies.ablation.table import from_mlflow, markdown, write
    from labline.tracking.store import open_store

    spec, parent = load(argv)
    store = open_store()
    parent = parent or _latest_parent(store, spec.name)  # type: ignore[union-attr]
    table = from_mlflow(store, parent)
    reports = store.get_run(parent).data.params.get("paths.reports", "reports")
    folder = write(table, workspace_root() / reports / "ablation" / table.name)
    print(markdown(table))
    print(f"rebuilt from MLflow parent run {parent}; written to {folder}")
