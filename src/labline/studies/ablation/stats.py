"""The numbers of an ablation table, as pure functions of per-run values (a unit test checks them by hand).

- mean +/- sample standard deviation (ddof=1) of each variant over its seeds (and folds);
- difference to the full model: variant mean - full mean;
- paired comparison with the full model: runs are paired by (seed, fold), so seed-to-seed noise that
  both share cancels; two-sided paired t-test (``scipy.stats.ttest_rel``). With fewer than two pairs,
  or differences that are all equal, the t statistic is undefined and the p-value is NaN;
- component effect, oriented so that positive means "the component helps" whatever the metric's
  direction: leave_one_out, the drop when it is removed from the full model; add_one_in, the gain when
  it is added to the baseline; full_factorial, its main effect (mean of the variants with it minus the
  mean of those without); rank 1 = largest effect.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from labline.studies.ablation.spec import Variant


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for one value, which says nothing about spread)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def paired_test(values: Mapping[Hashable, float], reference: Mapping[Hashable, float]) -> tuple[int, float]:
    """``(pairs, p)``: two-sided paired t-test of ``values`` against ``reference`` over their common keys."""
    keys = sorted(set(values) & set(reference), key=str)
    diffs = np.array([values[k] - reference[k] for k in keys])
    if len(keys) < 2 or np.ptp(diffs) == 0:
        return len(keys), math.nan
    result = stats.ttest_rel([values[k] for k in keys], [reference[k] for k in keys])
    return len(keys), float(result.pvalue)


@dataclass
class VariantRow:
    variant: str
    removed: tuple[str, ...]
    n: int
    mean: float
    std: float
    diff: float
    pairs: int
    p_value: float


@dataclass
class ComponentRow:
    component: str
    effect: float
    rank: int | None


def variant_rows(values: Mapping[str, Mapping[Hashable, float]], variants: Sequence[Variant], reference: str) -> list[VariantRow]:
    """One row per variant; the reference (the full model) gets no difference or test against itself."""
    ref = values.get(reference, {})
    ref_mean = mean_std(list(ref.values()))[0]
    rows = []
    for variant in variants:
        own = values.get(variant.name, {})
        mean, std = mean_std(list(own.values()))
        if variant.name == reference:
            rows.append(VariantRow(variant.name, variant.removed, len(own), mean, std, math.nan, 0, math.nan))
            continue
        pairs, p = paired_test(own, ref)
        rows.append(VariantRow(variant.name, variant.removed, len(own), mean, std, mean - ref_mean, pairs, p))
    return rows


def component_effects(means: Mapping[frozenset[str], float], components: Sequence[str], design: str,
                      mode: str) -> dict[str, float]:
    """Each component's effect from the variant means, keyed by the set of components a variant removes."""
    sign = 1.0 if mode == "max" else -1.0
    every = frozenset(components)
    effects = {}
    for c in components:
        if design == "leave_one_out":
            effect = means.get(frozenset(), math.nan) - means.get(frozenset({c}), math.nan)
        elif design == "add_one_in":
            effect = means.get(every - {c}, math.nan) - means.get(every, math.nan)
        else:
            with_c = [m for removed, m in means.items() if c not in removed]
            without = [m for removed, m in means.items() if c in removed]
            effect = float(np.mean(with_c) - np.mean(without)) if with_c and without else math.nan
        effects[c] = sign * effect
    return effects


def rank(effects: Mapping[str, float]) -> list[ComponentRow]:
    """Components from the largest effect down; ties share the better rank, unknown effects are unranked."""
    known = {c: e for c, e in effects.items() if not math.isnan(e)}
    ranks = dict(zip(known, stats.rankdata([-e for e in known.values()], method="min").astype(int).tolist(), strict=True))
    ordered = sorted(effects, key=lambda c: (ranks.get(c, math.inf), c))
    return [ComponentRow(c, effects[c], ranks.get(c)) for c in ordered]
