"""What the user sees in the terminal: the config tree and the metrics table."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

console = Console()


def config_tree(config: dict[str, Any], title: str = "config") -> None:
    tree = Tree(f"[bold]{title}[/bold]")
    for key, value in config.items():
        branch = tree.add(f"[bold cyan]{key}[/bold cyan]")
        text = OmegaConf.to_yaml(OmegaConf.create({"v": value})).removeprefix("v:").strip() if isinstance(value, dict) \
            else str(value)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    console.print(tree)


def metrics_table(metrics: dict[str, float], title: str = "test metrics") -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        value = metrics[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def model_training_url(base: str, experiment_id: str, run_id: str | None = None, tab: str | None = None) -> str:
    """A link into the MLflow UI that opens in its model-training view (runs, charts).

    MLflow 3.17's UI shows every experiment in its GenAI view (traces, an assistant) until the user flips its
    sidebar switch to "Model training", whatever the experiment's ``mlflow.experimentKind`` tag says (labline
    sets it anyway); a link that carries ``workflowType=machine_learning`` opens on the runs.
    """
    path = f"{base.rstrip('/')}/#/experiments/{experiment_id}"
    if run_id:
        path += f"/runs/{run_id}" + (f"/{tab}" if tab else "")
    return f"{path}?workflowType=machine_learning"
