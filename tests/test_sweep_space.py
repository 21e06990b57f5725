"""Hydra sweep syntax -> Optuna distributions, and sampled values back to overrides Hydra parses."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from labline.core.errors import ConfigError
from labline.studies.sweep.space import build_space


def _one(value: str):
    return build_space({"key": value}, []).distributions["key"]


@pytest.mark.parametrize(
    ("syntax", "expected"),
    [
        ("choice(adam, sgd)", CategoricalDistribution(["adam", "sgd"])),
        ("32,64,128", CategoricalDistribution([32, 64, 128])),
        ("choice(true, false)", CategoricalDistribution([True, False])),
        ("range(16, 65, 16)", IntDistribution(16, 64, step=16)),  # Hydra's stop is excluded
        ("range(1, 4)", IntDistribution(1, 3)),
        ("range(10, 0, -5)", IntDistribution(5, 10, step=5)),
        ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("interval(0.0, 0.5)", FloatDistribution(0.0, 0.5)),
        ("interval(1, 10)", FloatDistribution(1.0, 10.0)),  # Hydra parses interval bounds as floats
        ("tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("tag(log, range(1, 65))", IntDistribution(1, 64, log=True)),
    ],
)
def test_sweep_syntax_maps_to_optuna_distribution(syntax: str, expected) -> None:
    assert _one(syntax) == expected


@pytest.mark.parametrize(
    ("syntax", "needle"),
    [
        ("range(5, 5)", "empty range"),
        ("range(5, 1)", "empty range"),
        ("interval(1.0, 0.5)", "low <= high"),
        ("tag(log, interval(0, 1))", "low > 0"),
        ("tag(log, choice(1, 2))", "not to a choice"),
        ("tag(log, range(1, 10, 2))", "step"),
        ("choice(1,", "cannot parse"),
        ("interval(1)", "cannot parse"),
    ],
)
def test_bad_space_is_a_one_line_config_error_naming_the_key(syntax: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_space({"optimizer.lr": syntax}, [])
    message = str(info.value)
    assert info.value.key == "optimizer.lr"
    assert needle in message and "\n" not in message


def test_command_line_overrides_the_search_config() -> None:
    params = {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "data.batch_size": "32,64", "trainer.max_epochs": 5}
    space = build_space(params, ["optimizer.lr=interval(0.01, 0.1)", "data.batch_size=128", "backbone=mlp"])
    assert space.distributions == {"optimizer.lr": FloatDistribution(0.01, 0.1)}
    assert sorted(space.fixed) == ["backbone=mlp", "data.batch_size=128", "trainer.max_epochs=5"]


def test_job_overrides_parse_back_to_the_sampled_values() -> None:
    space = build_space({"optimizer": "choice(adam, sgd)", "backbone.channels": "choice([16,32], [32,64,128])",
                         "optimizer.lr": "tag(log, interval(1e-5, 1e-1))", "data.batch_size": "range(16, 129, 16)",
                         "flag": "choice(1, true)"}, ["trainer.max_epochs=3"])
    sampled = {"optimizer": "sgd", "backbone.channels": "[32,64,128]", "optimizer.lr": 1.5e-05, "data.batch_size": 48,
               "flag": True}
    lines = space.job_overrides(sampled)
    assert lines[0] == "trainer.max_epochs=3"
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(lines[1:])}
    assert parsed == {"optimizer": "sgd", "backbone.channels": [32, 64, 128], "optimizer.lr": 1.5e-05, "data.batch_size": 48,
                      "flag": True}


def test_probes_touch_every_option_and_both_ends() -> None:
    space = build_space({"optimizer": "choice(adam, sgd, adamw)", "optimizer.lr": "interval(0.001, 0.1)"}, [])
    probes = [set(p) for p in space.probes()]
    touched = set().union(*probes)
    assert {"optimizer=adam", "optimizer=sgd", "optimizer=adamw", "optimizer.lr=0.001", "optimizer.lr=0.1"} <= touched
    assert len(probes) == 3, "as many compositions as the longest choice has options"
    assert {"optimizer.lr=0.001", "optimizer.lr=0.1"} <= probes[0] | probes[1]


def test_grid_lists_every_value_and_refuses_intervals() -> None:
    space = build_space({"a": "choice(x, y)", "b": "range(0, 6, 2)", "c": "range(0.5, 1.0, 0.25)"}, [])
    assert space.grid() == {"a": ["x", "y"], "b": [0, 2, 4], "c": [0.5, 0.75]}
    with pytest.raises(ConfigError, match="grid sampler"):
        build_space({"lr": "interval(0.1, 1.0)"}, []).grid()
