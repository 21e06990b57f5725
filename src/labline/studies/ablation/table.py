"""The ablation table, rebuilt from MLflow alone: the parent's plan plus its finished children.

The runner and ``labline report`` both call ``from_mlflow``, so the table a study prints when it
finishes and the one rebuilt later from the store are the same by construction. A study that is
still running or was interrupted gives a partial table (``n`` below the planned count).
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labline.core.errors import ConfigError
from labline.core.io import write_json
from labline.studies.ablation import stats
from labline.studies.ablation.spec import FULL, Variant
from labline.tracking.store import Store

PLAN = "ablation/plan.json"
EFFECT = {"leave_one_out": "drop in {m} when the component is removed from the full model",
          "add_one_in": "gain in {m} when the component is added to the baseline (every component removed)",
          "full_factorial": "main effect on {m}: mean of the variants with the component minus the mean of those without"}


@dataclass
class RunRecord:
    variant: str
    seed: int
    fold: int | None
    config_hash: str
    run_id: str | None
    value: float | None


@dataclass
class AblationTable:
    plan: dict[str, Any]
    runs: list[RunRecord]
    variants: list[stats.VariantRow]
    components: list[stats.ComponentRow]

    @property
    def name(self) -> str:
        return self.plan["name"]


def tabulate(plan: dict[str, Any], runs: list[RunRecord]) -> AblationTable:
    variants = [Variant(v["name"], tuple(v["removed"])) for v in plan["variants"]]
    values: dict[str, dict[tuple[int, int | None], float]] = {}
    for r in runs:
        if r.value is not None:
            values.setdefault(r.variant, {})[(r.seed, r.fold)] = r.value
    rows = stats.variant_rows(values, variants, FULL)
    means = {frozenset(row.removed): row.mean for row in rows if row.n}
    effects = stats.component_effects(means, plan["components"], plan["design"], plan["mode"])
    return AblationTable(plan, runs, rows, stats.rank(effects))


def from_mlflow(store: Store, parent_id: str) -> AblationTable:
    """Read the plan the study logged on its parent and the metric of each planned run that finished."""
    parent = store.get_run(parent_id, f"parent={parent_id}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plan = json.loads(store.download(parent_id, PLAN, Path(tmp)).read_text())
    except Exception:
        raise ConfigError(f"parent={parent_id}", "is not an ablation parent run (it has no ablation plan)") from None
    finished = store.finished_children(parent_id, [parent.info.experiment_id])
    records = []
    for planned in plan["runs"]:
        run = finished.get(planned["config_hash"])
        value = None if run is None else store.run_value(run, plan["metric"])
        if run is not None and value is None:
            logged = sorted(run.data.metrics)
            raise ConfigError("metric", f"run {run.info.run_id} logged no '{plan['metric']}'", logged)
        records.append(RunRecord(planned["variant"], planned["seed"], planned["fold"], planned["config_hash"],
                                 None if run is None else run.info.run_id, value))
    return tabulate(plan, records)


def _num(x: float, digits: int = 4) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    return "–" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def markdown(table: AblationTable) -> str:
    plan, m = table.plan, table.plan["metric"]
    seeds, folds = plan["seeds"], plan["folds"]
    pairing = "seed and fold" if folds else "seed"
    per = f"{len(seeds)} seed{'s' * (len(seeds) > 1)} ({', '.join(map(str, seeds))})" + (f" x {folds} folds" if folds else "")
    better = "higher" if plan["mode"] == "max" else "lower"
    lines = [f"**Ablation `{table.name}`** ({plan['design']}): {m}, {better} is better; {per} per variant.", "",
             f"| variant | removed | n | {m} (mean ± std) | Δ vs full | p (paired t-test vs full) |",
             "|---|---|---:|---:|---:|---:|"]
    planned = Counter(r.variant for r in table.runs)
    for row in table.variants:
        removed = ", ".join(row.removed) if row.removed else "–"
        n = f"{row.n}" if row.n == planned[row.variant] else f"{row.n} of {planned[row.variant]}"
        diff = "–" if math.isnan(row.diff) else f"{row.diff:+.4f}"
        lines.append(f"| {row.variant} | {removed} | {n} | {_num(row.mean)} ± {_num(row.std)} | {diff} | {_p(row.p_value)} |")
    lines += ["", "| rank | component | effect |", "|---:|---|---:|"]
    for comp in table.components:
        effect = "–" if math.isnan(comp.effect) else f"{comp.effect:+.4f}"
        lines.append(f"| {comp.rank or '–'} | {comp.component} | {effect} |")
    lines += ["", f"mean ± std: sample standard deviation (ddof=1) over the runs of a variant. Δ: variant mean − full-model "
              f"mean. p: two-sided paired t-test (scipy.stats.ttest_rel) against the full model, runs paired by {pairing}. "
              f"Effect: {EFFECT[plan['design']].format(m=m)}; positive = the component helps; rank 1 = largest effect."]
    missing = _missing_p_values(table)
    if missing:
        lines += ["", "No p-value (–): " + "; ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def _missing_p_values(table: AblationTable) -> list[str]:
    """Why a variant's p is blank: too few pairs, or paired differences that are all equal (t = ±inf or 0/0)."""
    reasons = []
    for row in table.variants:
        if row.variant == FULL or not row.n or not math.isnan(row.p_value):
            continue
        if row.pairs < 2:
            reasons.append(f"{row.variant} has {row.pairs} run(s) paired with the full model, a t-test needs 2")
        else:
            reasons.append(f"{row.variant}'s {row.pairs} paired differences are all equal, so the t statistic is undefined")
    return reasons


def bar_chart(table: AblationTable, path: Path) -> Path:
    """Variant means with std error bars; the dashed line is the full model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.variants if r.n]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.8))
    stds = [0.0 if math.isnan(r.std) else r.std for r in rows]
    colours = ["tab:blue" if r.variant == FULL else "tab:gray" for r in rows]
    ax.bar(range(len(rows)), [r.mean for r in rows], yerr=stds, capsize=4, color=colours)
    full = next((r for r in rows if r.variant == FULL), None)
    if full is not None:
        ax.axhline(full.mean, color="tab:blue", ls="--", lw=0.8)
    # From zero: a cut axis makes a one-point difference look like a halving.
    low = min((r.mean - s for r, s in zip(rows, stds, strict=True)), default=0.0)
    high = max((r.mean + s for r, s in zip(rows, stds, strict=True)), default=1.0)
    ax.set_ylim(min(0.0, low), 1.05 * high if high > 0 else 1.0)
    ax.set_xticks(range(len(rows)), [r.variant for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{table.plan['metric']} (mean ± std)")
    ax.set_title(f"ablation {table.name}")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write(table: AblationTable, folder: Path) -> Path:
    """Markdown, CSVs, a metrics JSON for ``dvc metrics`` and the bar chart, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.md").write_text(markdown(table))
    _csv(folder / "table.csv", [{**asdict(r), "removed": "+".join(r.removed)} for r in table.variants])
    _csv(folder / "components.csv", [asdict(c) for c in table.components])
    _csv(folder / "runs.csv", [asdict(r) for r in table.runs])
    metric = table.plan["metric"]

    def finite(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 6)

    write_json({"metric": metric, "variants": {r.variant: {"n": r.n, "mean": finite(r.mean), "std": finite(r.std),
                                                           "diff": finite(r.diff), "p_value": finite(r.p_value)}
                                               for r in table.variants},
                "components": {c.component: {"effect": finite(c.effect), "rank": c.rank} for c in table.components}},
               folder / "metrics.json")
    bar_chart(table, folder / "bars.png")
    return folder
