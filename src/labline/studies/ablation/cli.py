"""``labline ablate`` and ``labline report``: Hydra-style ``key=value`` words in, an ablation table out."""

from __future__ import annotations

from labline.core.errors import ConfigError
from labline.core.paths import workspace_root
from labline.studies.cluster.slurm import SlurmSettings
from labline.tracking.store import Store

BACKENDS = ("local", "slurm")


def cluster_words(argv: list[str]) -> tuple[list[str], SlurmSettings | None]:
    """``backend=slurm`` and ``slurm.KEY=VALUE`` words (how the runs are executed, not what they are) apart from
    the study's words; the SLURM settings, or None to run here."""
    from omegaconf import OmegaConf

    backend, rest, dotted = "local", [], []
    for word in argv:
        key, _, value = word.partition("=")
        if key == "backend":
            backend = value
        elif key.startswith("slurm."):
            dotted.append(word.removeprefix("slurm."))
        else:
            rest.append(word)
    if backend not in BACKENDS:
        raise ConfigError("backend", f"unknown backend {backend!r}", BACKENDS)
    if backend == "local":
        if dotted:
            raise ConfigError(f"slurm.{dotted[0]}", "a SLURM setting without backend=slurm", "backend=slurm")
        return rest, None
    values = OmegaConf.to_container(OmegaConf.from_dotlist(dotted)) if dotted else {}
    return rest, SlurmSettings.from_config(values, "slurm")  # type: ignore[arg-type]


def ablate(argv: list[str]) -> None:
    """``labline ablate ablation=NAME [seeds=[0,1]] [design=...] [components=[a,b]] [training overrides]
    [backend=slurm slurm.partition=... slurm.time_min=...]``."""
    from labline.studies.ablation.runner import run_ablation
    from labline.studies.ablation.spec import load

    argv, cluster = cluster_words(argv)
    spec, parent = load(argv)
    if spec is None or parent is not None:
        raise ConfigError("parent", "names a study for `labline report`; `labline ablate` runs one", "ablation=NAME")
    run_ablation(spec, workspace_root(), cluster)


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
