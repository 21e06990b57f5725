"""What the user sees in the terminal: a run's header, its metrics table and id, the config tree when asked.

By default a training prints one header line (what runs, where it is recorded), Lightning's progress bar, the
test metrics and the run id with the command that reproduces it; a run inside a study (a sweep trial, an
ablation variant) prints nothing itself, its study prints one line for it. ``verbose=true`` adds the resolved
config tree (always logged as the run's ``config.yaml``) and the libraries' own messages, which
``quiet_libraries`` otherwise keeps out of the console: it is the one place labline silences them.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

console = Console()

# Warnings that say nothing to a labline user, verbose or not. Once SLURM is installed (``srun`` on PATH)
# Lightning warns on every Trainer outside ``srun`` that srun "is available but not used", a multi-line hint
# that would break labline's one-line errors: labline starts cluster jobs itself (submitit runs them under srun,
# where Lightning detects the allocation from SLURM's variables, which this filter leaves alone). Lightning's
# pytree helper trips torch's ``LeafSpec`` deprecation on every fit and test.
SILENCED_WARNINGS = (r"The `srun` command is available on your system but is not used",
                     r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# INFO chatter on every run: Lightning's device summary, its "litlogger" tip and checkpoint-restore lines;
# MLflow's schema creation messages.
CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "mlflow")
MLFLOW_LEVEL_ENV = "MLFLOW_LOGGING_LEVEL"


def quiet_libraries(verbose: bool = False) -> None:
    """Keep the libraries' notices out of the console unless ``verbose`` (warnings and errors always show)."""
    for pattern in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    level = logging.INFO if verbose else logging.WARNING
    if not verbose:
        os.environ.setdefault(MLFLOW_LEVEL_ENV, "WARNING")  # read when mlflow is first imported
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def run_header(name: str, what: str, experiment: str, uri: str) -> None:
    """The one line before a training: which run, of what, recorded where."""
    where = re.sub(r"://([^:/@]+):[^@/]+@", r"://\1:***@", uri)  # a database password stays off the screen
    console.print(f"[bold]{name}[/]: {what}; MLflow experiment '{experiment}' in {where}", highlight=False,
                  soft_wrap=True)


def run_footer(run_id: str) -> None:
    """The id that ``reproduce``, ``ensemble`` and ``backbone.weights`` take, and the command that repeats the run."""
    console.print(f"run id: {run_id}\nreproduce it: labline reproduce {run_id}", highlight=False, soft_wrap=True)


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
