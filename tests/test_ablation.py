"""Ablation statistics against a hand computation, design expansion, spec checks and run planning (no training)."""

from __future__ import annotations

import math
import os

import pytest

from labline.core.config import compose_config, to_plain
from labline.core.errors import ConfigError
from labline.studies.ablation import stats
from labline.studies.ablation.runner import PlannedRun, check_runs, plan
from labline.studies.ablation.spec import AblationSpec, Variant, load
from labline.studies.ablation.table import RunRecord, markdown, tabulate
from testroot import ROOT

# Three seeds per variant; removing component a hurts a lot, removing b a little.
FULL = [0.90, 0.92, 0.94]
NO_A = [0.80, 0.83, 0.84]
NO_B = [0.89, 0.92, 0.92]


def _p_two_sided_df2(t: float) -> float:
    """Student's t with 2 degrees of freedom has the closed-form CDF 1/2 + t / (2 sqrt(t^2 + 2))."""
    return 1.0 - abs(t) / math.sqrt(t * t + 2.0)


def test_statistics_match_a_hand_computation() -> None:
    values = {"full": dict(enumerate(FULL)), "no_a": dict(enumerate(NO_A)), "no_b": dict(enumerate(NO_B))}
    variants = [Variant("full", ()), Variant("no_a", ("a",)), Variant("no_b", ("b",))]
    full, no_a, no_b = stats.variant_rows(values, variants, "full")
    # means; sample std: sqrt(sum of squared deviations / (n - 1))
    assert full.mean == pytest.approx(0.92) and full.std == pytest.approx(math.sqrt((0.02**2 + 0 + 0.02**2) / 2))
    assert no_a.mean == pytest.approx(2.47 / 3)
    dev = [x - 2.47 / 3 for x in NO_A]
    assert no_a.std == pytest.approx(math.sqrt(sum(d * d for d in dev) / 2))
    assert no_b.mean == pytest.approx(0.91) and no_b.std == pytest.approx(math.sqrt(0.0006 / 2))
    # difference to the full model
    assert no_a.diff == pytest.approx(2.47 / 3 - 0.92) and no_b.diff == pytest.approx(-0.01)
    assert math.isnan(full.diff) and math.isnan(full.p_value)
    # paired differences no_a - full = [-0.10, -0.09, -0.10]: mean -0.09667, sd 0.0057735, t = mean / (sd / sqrt 3) = -29
    assert no_a.pairs == 3 and no_a.p_value == pytest.approx(_p_two_sided_df2(-29.0), rel=1e-6)
    # no_b - full = [-0.01, 0, -0.02]: mean -0.01, sd 0.01, t = -sqrt 3
    assert no_b.p_value == pytest.approx(_p_two_sided_df2(-math.sqrt(3)), rel=1e-6)
    means = {frozenset(r.removed): r.mean for r in (full, no_a, no_b)}
    effects = stats.component_effects(means, ["a", "b"], "leave_one_out", "max")
    assert effects == pytest.approx({"a": 0.92 - 2.47 / 3, "b": 0.01})
    assert [(c.component, c.rank) for c in stats.rank(effects)] == [("a", 1), ("b", 2)]
    # for a loss (lower is better) the same numbers mean removing a *helps*: its effect turns negative
    flipped = stats.component_effects(means, ["a", "b"], "leave_one_out", "min")
    assert [(c.component, c.rank) for c in stats.rank(flipped)] == [("b", 1), ("a", 2)]


def test_add_one_in_and_factorial_effects_by_hand() -> None:
    # removed set -> mean: full 0.9, without a 0.8, without b 0.85, baseline (without both) 0.7
    means = {frozenset(): 0.9, frozenset({"a"}): 0.8, frozenset({"b"}): 0.85, frozenset({"a", "b"}): 0.7}
    # add one in: only a (b removed) - baseline = 0.15; only b (a removed) - baseline = 0.10
    assert stats.component_effects(means, ["a", "b"], "add_one_in", "max") == pytest.approx({"a": 0.15, "b": 0.10})
    # main effect of a: mean(with a: 0.9, 0.85) - mean(without a: 0.8, 0.7) = 0.125; of b: (0.9+0.8)/2 - (0.85+0.7)/2 = 0.075
    assert stats.component_effects(means, ["a", "b"], "full_factorial", "max") == pytest.approx({"a": 0.125, "b": 0.075})


def test_paired_test_uses_matching_keys_only_and_is_undefined_without_spread() -> None:
    ref = {(0, None): 0.9, (1, None): 0.8, (2, None): 0.7}
    assert stats.paired_test({(0, None): 0.5}, ref)[0] == 1 and math.isnan(stats.paired_test({(0, None): 0.5}, ref)[1])
    assert math.isnan(stats.paired_test({k: v - 0.1 for k, v in ref.items()}, ref)[1]), "constant differences: no t"
    pairs, p = stats.paired_test({(0, None): 0.85, (2, None): 0.69, (5, None): 0.1}, ref)
    assert pairs == 2 and 0 < p < 1
    assert math.isnan(stats.mean_std([0.5])[1]) and stats.mean_std([0.5])[0] == 0.5


def _spec(design: str, names: tuple[str, ...] = ("a", "b", "c")) -> AblationSpec:
    return AblationSpec("t", None, [], {n: [f"{n}=off"] for n in names}, design=design, seeds=[0])


def test_designs_expand_to_the_expected_variants() -> None:
    loo = _spec("leave_one_out").variants()
    assert [(v.name, v.removed) for v in loo] == [("full", ()), ("no_a", ("a",)), ("no_b", ("b",)), ("no_c", ("c",))]
    add = _spec("add_one_in").variants()
    assert [(v.name, v.removed) for v in add] == [("full", ()), ("baseline", ("a", "b", "c")), ("only_a", ("b", "c")),
                                                  ("only_b", ("a", "c")), ("only_c", ("a", "b"))]
    factorial = _spec("full_factorial").variants()
    assert len(factorial) == 8 and len({v.removed for v in factorial}) == 8
    assert factorial[0].name == "full" and factorial[-1].name == "baseline" and factorial[-1].removed == ("a", "b", "c")
    assert _spec("leave_one_out").variant_overrides(loo[2]) == ["b=off"]


@pytest.mark.parametrize(
    ("words", "needle"),
    [(["ablation=nope"], "ablation=nope: 'nope' is not an option of group 'ablation' (valid: "),
     (["ablation=tiny", "components=[dropout,attention]"], "components: 'attention' is not a component of ablation 'tiny' "
                                                            "(valid: dropout, batch_norm)"),
     (["ablation=tiny", "design=one_at_a_time"], "design: 'one_at_a_time' is not a design (valid: leave_one_out, add_one_in, "
                                                 "full_factorial)"),
     (["ablation=tiny", "seeds=0"], "seeds: must be a count or a list"),
     (["ablation=tiny", "seeds=[1,1]"], "seeds: lists a seed twice"),
     (["ablation=tiny", "metric=accuracy"], "metric: 'accuracy' is not a metric a run logs"),
     (["ablation=tiny", "mode=up"], "mode: 'up' is not a direction (valid: max, min)"),
     (["ablation=tiny", "folds=1"], "folds: must be an integer >= 2"),
     (["ablation=tiny", "components=[dropout]", "design=add_one_in"], "design: add_one_in needs at least 2 components"),
     (["seeds=3"], "ablation: name the study"),
     (["ablation"], "ablation: cannot parse this word")],
)
def test_spec_errors_are_one_line_and_list_what_is_valid(words: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(words)
    assert str(info.value).startswith(needle) and "\n" not in str(info.value)
    if "not an option" in needle:
        assert "digits_cnn" in str(info.value) and "tiny" in str(info.value)


def test_command_line_words_split_into_spec_and_training_overrides() -> None:
    spec, parent = load(["ablation=tiny", "seeds=[3,4]", "components=[batch_norm]", "trainer.max_epochs=1", "name=other"])
    assert parent is None and spec.name == "other" and spec.seeds == [3, 4] and list(spec.components) == ["batch_norm"]
    assert spec.overrides[-1] == "trainer.max_epochs=1" and spec.overrides[0] == "backbone=mlp"
    assert load(["parent=abc"]) == (None, "abc")
    assert load(["ablation=digits_cnn"])[0].seeds == [0, 1, 2]


def test_plan_composes_every_run_with_its_own_config_hash() -> None:
    spec, _ = load(["ablation=tiny"])
    full, runs = plan(spec, ROOT)
    assert full.backbone.norm == "batch" and full.backbone.dropout > 0
    assert [(r.variant, r.seed) for r in runs] == [(v, s) for s in (0, 1) for v in ("full", "no_dropout", "no_batch_norm")]
    assert len({r.config_hash for r in runs}) == 6
    no_bn = next(r for r in runs if r.variant == "no_batch_norm")
    assert no_bn.cfg.backbone.norm == "none" and no_bn.cfg.backbone.dropout == full.backbone.dropout
    assert plan(spec, ROOT)[1][0].config_hash == runs[0].config_hash, "the hash is what resuming matches on: it must be stable"
    folded = plan(load(["ablation=tiny", "folds=2", "seeds=1"])[0], ROOT)[1]
    assert [(r.variant, r.fold) for r in folded] == [(v, f) for f in (0, 1) for v in ("full", "no_dropout", "no_batch_norm")]
    assert all(r.cfg.split.fold == r.fold for r in folded)


CORES = os.cpu_count() or 1


@pytest.mark.parametrize(
    ("words", "needle"),
    [(["components.dropout=[backbone.dropout=0.1]"], "components: variants full and no_dropout compose the same config"),
     (["components.dropout=[backbone.dropoutt=0]"], "components.dropout: "),
     (["components.dropout=[augment=nonee]"], "components.dropout: augment=nonee"),
     ([f"workers={CORES}", "threads=2"], f"workers: {CORES} workers x threads=2 exceed the {CORES} cores")],
)
def test_plan_rejects_components_that_do_nothing_or_do_not_compose(words: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan(load(["ablation=tiny", *words])[0], ROOT)
    assert str(info.value).startswith(needle)


def test_partial_study_table_shows_how_many_runs_are_in() -> None:
    planned = {"name": "t", "design": "leave_one_out", "metric": "test/acc", "mode": "max", "components": ["a"],
               "seeds": [0, 1], "folds": None, "variants": [{"name": "full", "removed": []}, {"name": "no_a", "removed": ["a"]}]}
    runs = [RunRecord("full", 0, None, "h1", "r1", 0.9), RunRecord("no_a", 0, None, "h2", "r2", 0.8),
            RunRecord("full", 1, None, "h3", "r3", 0.92), RunRecord("no_a", 1, None, "h4", None, None)]
    table = tabulate(planned, runs)
    text = markdown(table)
    assert "| no_a | a | 1 of 2 | 0.8000 ± – | -0.1100 | – |" in text
    assert "| full | – | 2 | 0.9100 ± 0.0141 | – | – |" in text
    assert "scipy.stats.ttest_rel" in text and "| 1 | a | +0.1100 |" in text


TERMS = {"soft_targets": "soft", "hard_labels": "hard", "feature_distillation": "feature", "attention_transfer": "attention"}


def test_distill_terms_expands_to_the_full_student_and_one_variant_per_loss_term() -> None:
    from labline.losses.distill import parse_terms

    spec, _ = load(["ablation=distill_terms", "seeds=1"])
    full, runs = plan(spec, ROOT)
    assert full.task._target_.endswith("DistillationTask") and full.task.teacher.endswith("teacher/checkpoints/model.ckpt")
    assert parse_terms(to_plain(full.task.loss_terms)).weights == {"soft": 0.5, "hard": 0.5, "feature": 0.005, "attention": 2.5}
    assert [r.variant for r in runs] == ["full", *(f"no_{c}" for c in TERMS)]
    for run in runs[1:]:
        removed = TERMS[run.variant.removeprefix("no_")]
        weights = parse_terms(to_plain(run.cfg.task.loss_terms)).weights
        assert set(weights) == set(TERMS.values()) - {removed}, run.variant
        assert to_plain(run.cfg.backbone) == to_plain(full.backbone) and run.cfg.task.teacher == full.task.teacher
    assert len({r.config_hash for r in runs}) == 5


def test_distill_terms_without_its_teacher_stops_before_any_run(tmp_path, isolated_store) -> None:
    from labline.studies.ablation.runner import run_ablation

    spec, _ = load(["ablation=distill_terms", "seeds=1", "components=[soft_targets]", "task.teacher=nowhere/teacher.ckpt"])
    empty = (isolated_store / "mlflow.db").read_bytes()
    with pytest.raises(ConfigError) as info:
        run_ablation(spec, tmp_path)
    message = str(info.value)
    assert message.startswith("variant full: task.teacher: no checkpoint file") and "nowhere/teacher.ckpt" in message
    assert (isolated_store / "mlflow.db").read_bytes() == empty, "no MLflow run was opened: nothing written to the store"


def test_removing_every_distillation_term_at_once_is_refused_not_trained_on_an_empty_loss() -> None:
    spec, _ = load(["ablation=distill_terms", "seeds=1", "design=add_one_in"])
    baseline = next(v for v in spec.variants() if v.name == "baseline")
    assert set(baseline.removed) == set(TERMS)
    cfg = compose_config(spec.variant_overrides(baseline))
    assert {name: term.weight for name, term in cfg.task.loss_terms.items()} == dict.fromkeys(TERMS.values(), 0)
    with pytest.raises(ConfigError) as info:  # run_ablation checks every variant this way before its parent run opens
        check_runs([PlannedRun("baseline", 0, None, cfg, "")], ROOT)
    assert str(info.value).startswith("variant baseline: task.loss_terms: every term has weight 0: nothing to train on")


def test_a_blank_p_value_says_why() -> None:
    """One pair (no test possible) and equal paired differences (t undefined) are told apart under the table."""
    planned = {"name": "t", "design": "leave_one_out", "metric": "test/acc", "mode": "max", "components": ["a", "b"],
               "seeds": [0, 1], "folds": None,
               "variants": [{"name": "full", "removed": []}, {"name": "no_a", "removed": ["a"]},
                            {"name": "no_b", "removed": ["b"]}]}
    runs = [RunRecord("full", 0, None, "h1", "r1", 0.9), RunRecord("full", 1, None, "h2", "r2", 0.8),
            RunRecord("no_a", 0, None, "h3", "r3", 0.85), RunRecord("no_a", 1, None, "h4", "r4", 0.75),
            RunRecord("no_b", 0, None, "h5", "r5", 0.7), RunRecord("no_b", 1, None, "h6", None, None)]
    text = markdown(tabulate(planned, runs))
    note = next(line for line in text.splitlines() if line.startswith("No p-value (–):"))
    assert "no_a's 2 paired differences are all equal" in note
    assert "no_b has 1 run(s) paired with the full model" in note
    assert "full" not in note.split(":", 1)[1].replace("full model", ""), "the reference itself needs no reason"
