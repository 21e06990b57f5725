"""``labline ablate`` and ``labline report``: Hydra-style ``key=value`` words in, an ablation table out."""

from __future__ import annotations

from labline.errors import ConfigError
from labline.paths import workspace_root


def ablate(argv: list[str]) -> None:
    """``labline ablate ablation=NAME [seeds=[0,1]] [design=...] [components=[a,b]] [training overrides]``."""
    from labline.ablation.runner import run_ablation
    from labline.ablation.spec import load

    spec, parent = load(argv)
    if spec is None or parent is not None:
        raise ConfigError("parent", "names a study for `labline report`; `labline ablate` runs one", "ablation=NAME")
    run_ablation(spec, workspace_root())


def _latest_parent(client, name: str) -> str:  # noqa: ANN001 - MlflowClient
    from labline.ablation.runs import search_all

    experiments = [e.experiment_id for e in client.search_experiments()]
    found = search_all(client, experiments, f"tags.role = 'ablation' and tags.ablation = '{name}'") if experiments else []
    if not found:
        raise ConfigError(f"ablation={name}", f"has no study in the MLflow store {client.tracking_uri}",
                          f"run `labline ablate ablation={name}` first")
    return found[-1].info.run_id


def report(argv: list[str]) -> None:
    """``labline report ablation=NAME`` (its latest study) or ``parent=RUN_ID``: the table from MLflow alone."""
    from mlflow.tracking import MlflowClient

    from labline.ablation.spec import load
    from labline.ablation.table import from_mlflow, markdown, write
    from labline.tracking.store import tracking_uri

    spec, parent = load(argv)
    client = MlflowClient(tracking_uri())
    parent = parent or _latest_parent(client, spec.name)  # type: ignore[union-attr]
    table = from_mlflow(client, parent)
    reports = client.get_run(parent).data.params.get("paths.reports", "reports")
    folder = write(table, workspace_root() / reports / "ablation" / table.name)
    print(markdown(table))
    print(f"rebuilt from MLflow parent run {parent}; written to {folder}")
