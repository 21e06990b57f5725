"""Study plots as PNG files (Optuna's matplotlib backend: plotly is not a labline dependency).

A plot Optuna cannot draw yet (importances need two completed trials with
varying parameters; intermediate values need a pruned or reported trial) is
skipped with the reason printed, never failing the sweep. Importances from fewer
than ``FEW_TRIALS`` completed trials are drawn with that caveat in their title.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization.matplotlib as vis  # noqa: E402
from optuna.exceptions import ExperimentalWarning  # noqa: E402

# Below this many completed trials, parameter importances (a random forest fitted on the trials) mostly show noise.
FEW_TRIALS = 5


def importance_caveat(study: optuna.Study) -> str | None:
    """What the importance plot and the console say when too few trials completed for importances to mean much."""
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if complete >= FEW_TRIALS:
        return None
    return f"importances from {complete} complete trial(s) only (fewer than {FEW_TRIALS}): mostly noise"


def study_plots(study: optuna.Study, objectives: list[str], out_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """``(written files, {plot: why it was skipped})``."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return [], {"all plots": "no trial completed"}
    single = len(study.directions) == 1
    target: dict[str, Any] = {"target_name": objectives[0]}
    if not single:
        target["target"] = lambda t: t.values[0]
    makers: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: vis.plot_optimization_history(study, **target),
        "parallel_coordinates": lambda: vis.plot_parallel_coordinate(study, **target),
        "param_importances": lambda: vis.plot_param_importances(study, **target),
    }
    if single:
        makers["intermediate_values"] = lambda: vis.plot_intermediate_values(study)
    else:
        makers["pareto_front"] = lambda: vis.plot_pareto_front(study, target_names=objectives)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = [], {}
    for name, make in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # matplotlib's remarks on degenerate axes
            try:
                axes = make()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                skipped[name] = " ".join(str(exc).split()) or type(exc).__name__
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        caveat = importance_caveat(study) if name == "param_importances" else None
        if caveat:
            figure.suptitle(caveat, color="darkred")
        figure.set_size_inches(9, 6)
        figure.tight_layout()
        path = out_dir / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written, skipped
