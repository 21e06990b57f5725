"""A trained classifier scored on shifted versions of one part of its data (``labline.data.shifts``).

The shifted sets are made from the raw images of the part, so a corruption acts on pixels, not on
normalised values; each set is then normalised exactly as the run's data were (the configured
preprocessing, fitted again on the run's train part, checked to reproduce the run's processed part) and
predicted by the model in memory. What is written, under ``<part>/shift/<family>/``:

- per set: ``acc`` and ``f1_macro`` (macro over the classes present in the set: a resampled set may lack some),
  and what the family adds (``acc_corrected`` for a prior-corrected classifier, ``prior_tv``);
- the family's summary (``mca``, ``drop``, ``relative_drop`` for corruptions), and ``<part>/shift/clean/acc``;
- files: ``<family>.csv`` (every set's scores), ``<family>.md`` (a table), ``<family>_heatmap.png`` (a family
  with a grid: corruption x severity).

A training run whose config has a ``shift`` node reports them on its test part after testing (or, when it
does not test, on its validation part: the keys a sweep may optimise); ``labline evaluate`` reports them for
a finished run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.data.pipeline import fitted_preprocess, load_processed, load_raw
from labline.data.preprocess import Normaliser
from labline.data.shifts import Scores, Shift, TestSet
from labline.models.classification import ClassificationTask
from labline.reporting import plots

SHIFT_KEY = "shift"
FOLDER = "shift"
# Largest difference between the run's processed values and the preprocessing applied again (float32 rounding).
REPRODUCED_ATOL = 1e-4


def families(node: DictConfig | None) -> dict[str, Shift]:
    """The ``shift`` node (family name -> its config) built; an unknown target is one line naming it."""
    built = {}
    for name, sub in (node or {}).items():
        family = instantiate(sub, f"{SHIFT_KEY}.{name}")
        if not isinstance(family, Shift):
            raise ConfigError(
                f"{SHIFT_KEY}.{name}._target_", f"built a {type(family).__name__}", "a subclass of labline.data.shifts.Shift"
            )
        built[str(name)] = family
    return built


def check_shiftable(cfg: DictConfig) -> None:
    """Only a Lightning classification task re-runs on new inputs here; refused before anything runs."""
    runner = cfg.task.get("runner")
    if runner:
        raise ConfigError(
            "task",
            f"a task run by {runner} (scikit-learn) keeps no model labline re-runs on shifted data",
            "a run of a Lightning classification task (task=classification, distill, fixmatch, ...)",
        )


def check_task(task: object, cfg: DictConfig) -> ClassificationTask:
    if not isinstance(task, ClassificationTask):
        raise ConfigError(
            "task",
            f"{type(task).__name__} ({cfg.task.get('_target_')}) is not scored per image class, "
            "so it has no accuracy under shift",
            "a run of a classification task",
        )
    return task


def test_set(cfg: DictConfig, root: Path, part: str) -> tuple[TestSet, Normaliser]:
    """The raw images of ``part`` and the run's normaliser, checked to give the run's processed values."""
    processed = load_processed(cfg, root)
    x, norm = fitted_preprocess(cfg, load_raw(cfg, root), processed.parts)
    idx, train = processed.parts[part], processed.parts["train"]
    if len(idx) == 0:
        raise ConfigError(SHIFT_KEY, f"the run's {part} part is empty", "a run with a test part")
    if not np.allclose(norm.transform(x[idx]), processed.x[idx], atol=REPRODUCED_ATOL):
        raise ConfigError(
            "preprocess",
            f"applying {cfg.preprocess.get('_target_')} again to the raw {part} part does not give the run's processed data",
            "the data and preprocessing the run recorded",
        )
    priors = np.bincount(processed.y[train], minlength=len(processed.classes)) / len(train)
    return TestSet(x[idx], processed.y[idx], processed.classes, float(x[train].min()), float(x[train].max()), priors), norm


def probabilities(task: ClassificationTask, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax of the task's class logits, in eval mode, batch by batch on the task's device."""
    task.eval()
    device = next(task.parameters()).device
    rows = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).to(device)
            rows.append(task.main_logits(task(batch)).float().softmax(-1).cpu().numpy())
    return np.concatenate(rows)


def scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    predicted = probs.argmax(1)
    return {
        "acc": float(np.mean(predicted == y)),
        "f1_macro": float(f1_score(y, predicted, labels=np.unique(y), average="macro", zero_division=0)),
    }


def _write_csv(per_set: Scores, path: Path) -> Path:
    keys = sorted({k for row in per_set.values() for k in row})
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["set", *keys])
        writer.writerows([name, *(f"{row[k]:.6g}" if k in row else "" for k in keys)] for name, row in per_set.items())
    return path


def _markdown(name: str, family: Shift, per_set: Scores, summary: dict[str, float], clean: dict[str, float]) -> str:
    lines = [f"# shift={name}", "", f"clean accuracy {clean['acc']:.4f}", ""]
    grid = family.grid(per_set)
    if grid is not None:
        rows, columns, table = grid
        lines += ["| | " + " | ".join(f"severity {c}" for c in columns) + " | mean |", "|---" * (len(columns) + 2) + "|"]
        lines += [
            f"| {row} | " + " | ".join("" if np.isnan(v) else f"{v:.4f}" for v in values) + f" | {np.nanmean(values):.4f} |"
            for row, values in zip(rows, table, strict=True)
        ]
    else:
        keys = sorted({k for row in per_set.values() for k in row})
        lines += ["| set | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(f"{row.get(k, float('nan')):.4f}" for k in keys) + " |" for s, row in per_set.items()]
    lines += ["", *(f"- {k}: {v:.4f}" for k, v in summary.items())]
    return "\n".join(lines) + "\n"


@dataclass
class ShiftReport:
    """Every metric (``<part>/shift/...``), the clean and per-family summary ones among them, and the files."""

    metrics: dict[str, float]
    summary: dict[str, float]
    files: list[Path]


def evaluate_shifts(
    task: ClassificationTask, cfg: DictConfig, root: Path, shifts: dict[str, Shift], part: str, folder: Path
) -> ShiftReport:
    """Scores on every family in ``shifts`` over ``part``, the files written into ``folder/shift/``."""
    test, norm = test_set(cfg, root, part)
    batch = int(cfg.data.batch_size)
    clean = scores(test.y, probabilities(task, norm.transform(test.x), batch))
    metrics = {f"{part}/{SHIFT_KEY}/clean/{k}": v for k, v in clean.items()}
    summaries = dict(metrics)
    out = folder / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, family in shifts.items():
        per_set: Scores = {}
        for shifted in family.sets(test):
            probs = probabilities(task, norm.transform(shifted.x), batch)
            row = {}
            for variant, p in family.predictions(shifted, probs, test).items():
                row.update({f"{k}_{variant}" if variant else k: v for k, v in scores(shifted.y, p).items()})
            per_set[shifted.name] = {**row, **shifted.info}
        summary = family.summary(per_set, clean)
        prefix = f"{part}/{SHIFT_KEY}/{name}"
        metrics |= {f"{prefix}/{s}/{k}": v for s, row in per_set.items() for k, v in row.items()}
        summaries |= {f"{prefix}/{k}": v for k, v in summary.items()}
        files.append(_write_csv(per_set, out / f"{name}.csv"))
        (out / f"{name}.md").write_text(_markdown(name, family, per_set, summary, clean))
        files.append(out / f"{name}.md")
        grid = family.grid(per_set)
        if grid is not None:
            files.append(
                plots.shift_heatmap(
                    *grid, clean["acc"], out / f"{name}_heatmap.png", title=f"{cfg.data.name}: accuracy under {name}"
                )
            )
    return ShiftReport(metrics | summaries, summaries, files)


def load_weights(task: ClassificationTask, checkpoint: Path) -> None:
    """The checkpoint's weights into ``task``; plain tensors only (``weights_only``: a file must not run code)."""
    import pickle

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            str(checkpoint),
            f"holds more than plain weights and state, refused (weights_only): {' '.join(str(exc).split())[:200]}",
            "a checkpoint labline wrote",
        ) from None
    task.load_state_dict(saved["state_dict"])
