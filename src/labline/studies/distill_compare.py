"""The comparison that closes a distillation study: teacher, student from scratch, distilled student.

Each row is one or more finished runs, named by the params files their DVC stages read (``{seed}`` in a
file name stands for each seed of the study). Test accuracy comes from each run's ``metrics.json`` (what
the evaluate stage wrote); parameters and FLOPs are counted on the deployable model, backbone + head
rebuilt from the run's checkpoint, so training-only parts (a feature-distillation projection) do not count.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labline.core.errors import ConfigError
from labline.core.io import write_json
from labline.data.pipeline import load_processed
from labline.metrics.complexity import model_complexity
from labline.models.checkpoints import CheckpointRef
from labline.models.distill import load_classifier

ROWS = {"teacher": "teacher", "student_scratch": "student from scratch", "student_distilled": "distilled student"}


def _params(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(str(path), "params file not found", "run `labline params experiment=... --output FILE`")
    return OmegaConf.load(path)


def _read_json(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(str(path), "not found", f"run the {stage} stage first: `dvc repro pipelines/distill/dvc.yaml`")
    return json.loads(path.read_text())


def run_summary(params: Path, root: Path) -> dict[str, Any]:
    """One finished run: its MLflow run id, seed, test accuracy and the size and cost of its model."""
    cfg = _params(params)
    models, reports = root / cfg.paths.models, root / cfg.paths.reports
    recorded = _read_json(models / "run.json", "train")
    metrics = _read_json(reports / "metrics.json", "evaluate")
    shape = tuple(load_processed(cfg, root).x.shape[1:])
    checkpoint = models / recorded["checkpoint"]
    loaded = load_classifier(CheckpointRef(checkpoint, str(checkpoint), recorded["run_id"]), shape, key=str(models))
    complexity = model_complexity(loaded.model, shape)
    return {"run_id": recorded["run_id"], "seed": int(cfg.seed), "test/acc": float(metrics["test/acc"]),
            "params": complexity["params"], "flops": complexity["flops"]}


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds; the model's size from its first run (seeds share the architecture)."""
    accuracies = [r["test/acc"] for r in runs]
    return {"test/acc": statistics.fmean(accuracies),
            "test/acc_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "runs": len(runs), "params": runs[0]["params"], "flops": runs[0]["flops"],
            "per_seed": {str(r["seed"]): r["test/acc"] for r in runs},
            "run_ids": {str(r["seed"]): r["run_id"] for r in runs}}


def compare(files: dict[str, Sequence[Path]], root: Path) -> dict[str, Any]:
    """``{row: summary}`` for the rows of ``ROWS`` plus ``distillation_gain`` (distilled minus scratch mean accuracy)."""
    result: dict[str, Any] = {row: summarise([run_summary(f, root) for f in files[row]]) for row in ROWS}
    result["distillation_gain"] = result["student_distilled"]["test/acc"] - result["student_scratch"]["test/acc"]
    return result


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| model | test accuracy (mean ± std over runs) | runs | params | FLOPs |", "| --- | --- | ---: | ---: | ---: |"]
    for row, label in ROWS.items():
        r = result[row]
        lines.append(f"| {label} | {r['test/acc']:.4f} ± {r['test/acc_std']:.4f} | {r['runs']} | "
                     f"{r['params']:,} | {r['flops']:,} |")
    lines.append("")
    lines.append(f"Distilled minus from-scratch student: {100 * result['distillation_gain']:+.2f} accuracy points.")
    return "\n".join(lines) + "\n"


def expand(template: str, seeds: Sequence[int]) -> list[Path]:
    """The params files of one row: ``template`` with ``{seed}`` replaced by each seed (once if it has none)."""
    return [Path(p) for p in dict.fromkeys(template.replace("{seed}", str(seed)) for seed in seeds)]


def compare_study(teacher: str, scratch: str, student: str, seeds: Sequence[int], output: Path, table: Path,
                  root: Path) -> str:
    """Write the comparison as JSON (a DVC metrics file) and a Markdown table; returns the table."""
    if not seeds:
        raise ConfigError("--seeds", "is empty", "one or more seeds, e.g. 0 1 2")
    files = {"teacher": expand(teacher, seeds), "student_scratch": expand(scratch, seeds),
             "student_distilled": expand(student, seeds)}
    result = compare(files, root)
    write_json(result, output)
    text = markdown_table(result)
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(text)
    return text
