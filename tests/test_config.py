"""conf/ is the one source of truth; overrides are checked before anything runs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from labline.core.config import compose_config, config_groups, flatten, group_options, hydra_context
from labline.core.errors import ConfigError
from testroot import CONF, ROOT


def test_committed_params_yaml_matches_conf() -> None:
    cfg = compose_config([], conf=CONF)
    OmegaConf.resolve(cfg)
    committed = OmegaConf.load(ROOT / "params.yaml")
    assert OmegaConf.to_container(committed) == OmegaConf.to_container(cfg), "run `labline params` and commit params.yaml"


def test_every_group_named_by_the_design_exists() -> None:
    with hydra_context(CONF):
        groups = config_groups()
        for group in ("data", "backbone", "head", "task", "loss", "optimizer", "scheduler", "trainer", "callbacks",
                      "logger", "split", "preprocess", "augment", "experiment"):
            assert group in groups, group
            assert group_options(group), f"group {group} has no options"


def test_every_option_composes_and_has_a_target_where_it_builds_something(compose) -> None:
    with hydra_context(CONF):
        options = {g: group_options(g) for g in ("backbone", "head", "loss", "optimizer", "trainer", "preprocess", "split")}
    for group, names in options.items():
        for name in names:
            cfg = compose(f"{group}={name}")
            assert "_target_" in cfg[group], f"{group}={name}"


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (["backbone=resnett"], "backbone=resnett", "valid: "),
        (["optimizer.lrr=0.1"], "optimizer.lrr", "lr"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs", "integer"),
        (["seed=1.5"], "seed", "integer"),
        (["trainer.deterministic=maybe"], "trainer.deterministic", "boolean"),
        (["backbone.channels=7"], "backbone.channels", "list"),
    ],
)
def test_bad_overrides_raise_one_line_errors(overrides: list[str], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose_config(overrides, conf=CONF)
    message = str(info.value)
    assert "\n" not in message
    assert key in message and fragment in message


def test_int_where_float_expected_is_accepted(compose) -> None:
    cfg = compose("optimizer.lr=1")
    assert cfg.optimizer.lr == 1


def test_null_disables_a_value(compose) -> None:
    assert compose("trainer.gradient_clip_val=null").trainer.gradient_clip_val is None


def test_flatten_uses_dotted_keys() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": []}) == {"a.b": 1, "a.c.d": 2, "e": []}
