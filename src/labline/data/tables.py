"""Tables as datasets: one CSV file, one row per sample, read by pandas.

Numeric columns become features as they are; text (categorical) columns are one-hot encoded, one feature per
value. Missing values are refused with the column named, or kept as NaN and filled later with statistics of
the training part alone (``missing=mean|median|most_frequent``; the preprocess step does it), so the
validation and test rows never shape the values the model sees. A missing categorical value becomes its
own category. An optional split column keeps the table's own train/val/test assignment (``split=given``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from labline.core.errors import ConfigError
from labline.data.raw import IMPUTE, PARTS, RawDataset, check_dataset

MISSING = ("refuse", *IMPUTE)


def _read(path: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ConfigError(path, "file not found", "data.source.path=<a .csv file>")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"is not a readable CSV table ({' '.join(str(exc).split())[:120]})",
                          "comma-separated values with a header row") from None
    if frame.empty:
        raise ConfigError(path, "has no rows", "a header row and one row per sample")
    return frame


def _column(frame: pd.DataFrame, name: str, key: str, path: str) -> pd.Series:
    if name not in frame.columns:
        raise ConfigError(key, f"no column '{name}' in {path}", list(map(str, frame.columns)))
    return frame[name]


def _features(frame: pd.DataFrame, missing: str, path: str) -> np.ndarray:
    """Numeric columns as they are, text columns one-hot; NaN refused (naming the column) or kept for imputation."""
    if missing == "refuse":
        gaps = [str(c) for c in frame.columns if frame[c].isna().any()]
        if gaps:
            counts = ", ".join(f"{c} ({int(frame[c].isna().sum())} rows)" for c in gaps)
            raise ConfigError(path, f"missing values in column {counts}",
                              "fill them, or data.source.missing=mean|median|most_frequent")
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    filled = frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), "<missing>") for c in text})
    return pd.get_dummies(filled, columns=text, dtype=np.float32).to_numpy(dtype=np.float32, na_value=np.nan)


def _label_order(values: list[str]) -> list[str]:
    """Sorted label values, numbers by value (``2`` before ``10``), then text."""
    def key(value: str) -> tuple[int, float, str]:
        try:
            return 0, float(value), value
        except ValueError:
            return 1, 0.0, value
    return sorted(set(values), key=key)


def csv_table(path: str, target: str, features: list[str] | None = None, split_column: str | None = None,
              missing: str = "refuse", classes: list[str] | None = None) -> RawDataset:
    """A CSV table: ``target`` is the label column, ``features`` the input columns (``null``: every other column
    except ``split_column``). Class names are the target's values, sorted, unless ``classes`` gives their order."""
    if missing not in MISSING:
        raise ConfigError("data.source.missing", f"unknown strategy '{missing}'", MISSING)
    frame = _read(path)
    labels = _column(frame, target, "data.source.target", path)
    if labels.isna().any():
        raise ConfigError(path, f"the target column '{target}' has {int(labels.isna().sum())} empty rows",
                          "a label in every row")
    skip = {target, split_column} - {None}
    names = list(features) if features is not None else [c for c in frame.columns if c not in skip]
    if not names:
        raise ConfigError("data.source.features", f"{path} has no feature columns besides the target", "one or more columns")
    columns = [_column(frame, n, "data.source.features", path) for n in names]
    x = _features(pd.concat(columns, axis=1), missing, path)
    values = [str(v) for v in labels]
    order = list(classes) if classes else _label_order(values)
    unknown = sorted(set(values) - set(order))
    if unknown:
        raise ConfigError("data.source.classes", f"labels {unknown[:5]} of column '{target}' are not listed", order)
    index = {name: i for i, name in enumerate(order)}
    y = np.array([index[v] for v in values], dtype=np.int64)
    part = None
    if split_column is not None:
        part = _column(frame, split_column, "data.source.split_column", path).astype(str).str.strip().str.lower()
        part = part.replace({"validation": "val", "valid": "val", "dev": "val"}).to_numpy(dtype=str)
        unknown_parts = sorted(set(part.tolist()) - set(PARTS))
        if unknown_parts:
            raise ConfigError("data.source.split_column", f"column '{split_column}' holds {unknown_parts[:5]}", PARTS)
    ds = RawDataset(x=x, y=y, classes=order, part=part, impute=None if missing == "refuse" else missing)
    check_dataset(ds, path)
    return ds
