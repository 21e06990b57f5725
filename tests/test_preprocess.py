"""Normalisers: known values on hand-made arrays, statistics from the train split only."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from labline.core.config import compose_config, group_options, hydra_context
from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.data.pipeline import preprocess_dataset
from labline.data.preprocess import L2, Atan, Log, MinMax, ZScore
from labline.data.raw import RawDataset
from testroot import CONF

with hydra_context(CONF):
    OPTIONS = group_options("preprocess")


@pytest.fixture(scope="module")
def compose():
    """The conftest ``compose`` with one Hydra initialisation and a cache for the module (~0.3 s per compose saved)."""
    with hydra_context(CONF):
        yield cache(lambda *overrides: compose_config(list(overrides), conf=CONF))


def test_the_design_s_normalisers_are_all_options() -> None:
    assert set(OPTIONS) >= {"zscore", "minmax", "log", "atan", "l2"}


def test_zscore_and_minmax_known_values() -> None:
    x = np.array([[0.0, 2.0], [2.0, 4.0]])
    np.testing.assert_allclose(ZScore(per_feature=False).fit(x).transform(x), [[-np.sqrt(2), 0], [0, np.sqrt(2)]], rtol=1e-6)
    np.testing.assert_allclose(ZScore(per_feature=True).fit(x).transform(x), [[-1, -1], [1, 1]])
    np.testing.assert_allclose(MinMax(per_feature=False).fit(x).transform(x), [[0, 0.5], [0.5, 1]])


def test_log_is_log10_x_over_log10_max() -> None:
    x = np.array([[1.0, 10.0], [100.0, 1000.0]])
    np.testing.assert_allclose(Log(per_feature=False).fit(x).transform(x), [[0, 1 / 3], [2 / 3, 1]], rtol=1e-6)
    np.testing.assert_allclose(Log(per_feature=True).fit(x).transform(x), [[0, 1 / 3], [1, 1]], rtol=1e-6)


def test_log_offset_maps_zero_to_zero() -> None:
    x = np.array([[0.0, 9.0, 99.0]])
    np.testing.assert_allclose(Log(offset=1.0, per_feature=False).fit(x).transform(x), [[0, 0.5, 1]], rtol=1e-6)


def test_log_below_one_is_a_config_error_naming_the_fixing_offset() -> None:
    with pytest.raises(ConfigError, match=r"^preprocess.offset: .*reach 0.5 .*valid: >= 0.5"):
        Log().fit(np.array([0.5, 10.0]))
    fitted = Log().fit(np.array([1.0, 10.0]))
    with pytest.raises(ConfigError, match="^preprocess.offset"):
        fitted.transform(np.array([0.0, 5.0]))  # a value of another split below the requirement


def test_atan_known_values() -> None:
    x = np.array([0.0, 1.0, -1.0, np.tan(np.pi / 8), 1e9])
    np.testing.assert_allclose(Atan().fit(x).transform(x), [0, 0.5, -0.5, 0.25, 1.0], atol=1e-6)


def test_l2_scales_each_sample_to_unit_length() -> None:
    x = np.array([[[3.0, 4.0]], [[0.0, 0.0]], [[1.0, 1.0]]])
    np.testing.assert_allclose(L2().fit(x).transform(x), [[[0.6, 0.8]], [[0, 0]], [[0.70710677, 0.70710677]]], rtol=1e-6)


@pytest.mark.parametrize("name", OPTIONS)
def test_statistics_come_from_the_train_split_only(compose, name: str) -> None:
    """Changing the val/test values changes neither the fitted state nor the train split's output."""
    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 50.0, size=(30, 1, 2, 2)).astype(np.float32)
    parts = {"train": np.arange(0, 20), "val": np.arange(20, 25), "test": np.arange(25, 30)}
    shifted = x.copy()
    shifted[20:] = shifted[20:] * 100.0 + 7.0  # scale and shift: l2 ignores scale alone
    cfg = compose(f"preprocess={name}")
    ds, other = RawDataset(x, np.zeros(30, dtype=np.int64), ["a"]), RawDataset(shifted, np.zeros(30, dtype=np.int64), ["a"])
    out, state = preprocess_dataset(cfg, ds, parts)
    out_other, state_other = preprocess_dataset(cfg, other, parts)
    assert state == state_other == instantiate(cfg.preprocess, "preprocess").fit(x[:20]).state
    np.testing.assert_array_equal(out[:20], out_other[:20])
    assert not np.allclose(out[20:], out_other[20:])
    assert out.dtype == np.float32 and np.isfinite(out_other).all()
