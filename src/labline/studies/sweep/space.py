"""Hydra sweep syntax -> Optuna distributions, and sampled values -> job overrides.

The same strings a researcher types for a Hydra multirun describe the search:

- ``choice(a, b)`` / ``a,b`` (values or config-group options): categorical
- ``range(start, stop[, step])``: integers (or stepped floats), ``stop`` excluded as in Hydra
- ``interval(low, high)``: floats in [low, high]; ``tag(log, interval(...))`` samples log-uniformly

Keys given without a sweep (``trainer.max_epochs=5``) are fixed for every trial,
and the command line overrides what ``hydra.sweeper.params`` says about a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.errors import OverrideParseException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from labline.core.errors import ConfigError

SYNTAX = "choice(a, b), range(start, stop[, step]), interval(low, high), tag(log, interval(low, high))"


@dataclass(frozen=True)
class SearchSpace:
    distributions: dict[str, BaseDistribution]
    # Per categorical key, each choice as the override text Hydra parses back (lists stay lists).
    labels: dict[str, list[str]]
    fixed: list[str]

    def value_text(self, key: str, value: Any) -> str:
        distribution = self.distributions[key]
        if isinstance(distribution, CategoricalDistribution):
            # type-aware lookup: True == 1 in Python, but choice(1, true) are two options
            index = next(i for i, c in enumerate(distribution.choices) if type(c) is type(value) and c == value)
            return self.labels[key][index]
        return repr(value)

    def job_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The override list of one trial: the fixed overrides, then one per sampled parameter."""
        return [*self.fixed, *(f"{key}={self.value_text(key, value)}" for key, value in params.items())]

    def probes(self) -> list[list[str]]:
        """Override lists that together touch every categorical option and both ends of every
        numeric range, so a typo in any of them is caught before the first trial. Probe ``i`` takes
        option ``i`` of every key (cycling through shorter lists; a range's are its two ends): each
        probe is a full composition (up to a second on a busy machine), so there are only as many as
        the longest choice has options, at least two."""
        ends = {key: _ends(d) for key, d in self.distributions.items()}
        count = max([2, *(len(values) for values in ends.values())])
        return [self.job_overrides({key: values[i % len(values)] for key, values in ends.items()}) for i in range(count)]

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every parameter, for Optuna's GridSampler."""
        return {key: _all_values(key, d) for key, d in self.distributions.items()}

    def categorical(self) -> list[str]:
        """Keys sampled from a set of options (what CMA-ES cannot model)."""
        return [key for key, d in self.distributions.items() if isinstance(d, CategoricalDistribution)]

    def describe(self) -> dict[str, str]:
        return {key: _describe(d) for key, d in self.distributions.items()}


def build_space(params: Mapping[str, Any], arguments: Sequence[str], parser: OverridesParser | None = None) -> SearchSpace:
    """``hydra.sweeper.params`` plus the command line's overrides -> a ``SearchSpace``."""
    parser = parser or OverridesParser.create()
    entries: dict[str, Override] = {}
    for override in [*_parse(parser, [f"{k}={v}" for k, v in params.items()]), *_parse(parser, arguments)]:
        entries[override.get_key_element()] = override
    distributions: dict[str, BaseDistribution] = {}
    labels: dict[str, list[str]] = {}
    fixed: list[str] = []
    for key, override in entries.items():
        if not override.is_sweep_override():
            fixed.append(override.input_line or f"{key}={override.get_value_element_as_str()}")
            continue
        distributions[key] = to_distribution(override)
        if override.is_choice_sweep():
            labels[key] = list(override.sweep_string_iterator())
    return SearchSpace(distributions, labels, fixed)


def to_distribution(override: Override) -> BaseDistribution:
    """One sweep override -> its Optuna distribution, or a one-line ``ConfigError`` naming the key."""
    key = override.get_key_element()
    sweep = override.value()
    log = "log" in getattr(sweep, "tags", set())
    try:
        if override.is_choice_sweep():
            if log:
                raise ConfigError(key, "tag(log, ...) applies to interval(...) or range(...), not to a choice", SYNTAX)
            return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        if override.is_range_sweep():
            values = list(override.sweep_iterator())
            if not values:
                raise ConfigError(key, f"empty range: {override.get_value_string()} has no values (the stop value is "
                                       "excluded)", "range(start, stop[, step]) with start < stop for a positive step")
            low, high, step = min(values), max(values), abs(sweep.step)
            if all(isinstance(v, int) for v in values):
                return IntDistribution(low, high, step=step, log=log)
            return FloatDistribution(low, high, step=None if log else float(step), log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(key, f"{override.get_value_string()}: {' '.join(str(exc).split())}", SYNTAX) from None


def _parse(parser: OverridesParser, lines: Iterable[str]) -> list[Override]:
    parsed = []
    for line in lines:
        try:
            parsed += parser.parse_overrides([line])
        except OverrideParseException as exc:
            lines = [part for part in str(exc).splitlines() if part.strip() and not part.startswith(("Error parsing", "See "))]
            raise ConfigError(line.split("=", 1)[0], f"cannot parse '{line}': {lines[0] if lines else ''}", SYNTAX) from None
    return parsed


def _ends(distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _all_values(key: str, distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        low, step = Decimal(str(distribution.low)), Decimal(str(distribution.step))
        count = int((Decimal(str(distribution.high)) - low) / step) + 1
        return [float(low + i * step) for i in range(count)]
    raise ConfigError(key, "the grid sampler needs a finite set of values, not an interval",
                      "choice(a, b), range(start, stop[, step])")


def _describe(distribution: BaseDistribution) -> str:
    if isinstance(distribution, CategoricalDistribution):
        return f"choice{tuple(distribution.choices)}"
    kind = "int" if isinstance(distribution, IntDistribution) else "float"
    step = f", step={distribution.step}" if distribution.step not in (None, 1) else ""
    return f"{'log-' if distribution.log else ''}{kind}[{distribution.low}, {distribution.high}{step}]"
