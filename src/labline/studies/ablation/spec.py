"""An ablation study as written in ``conf/ablation/<name>.yaml``, checked, and expanded into variants.

The file names the full model (an experiment plus overrides) and, per component, the overrides
that remove it. The design decides which combinations run: ``leave_one_out`` removes one
component at a time, ``add_one_in`` starts from the model with every component removed and adds
one back at a time, ``full_factorial`` runs every subset. Every design also runs the full model,
because each variant is compared with it.

Command-line words override the file (``seeds=[0,1]``, ``design=add_one_in``, ``components=[a,b]``
to run a subset, ``components.a=[...]`` to change one); any other ``key=value`` is a training
override appended to the full model's (``trainer.max_epochs=5``).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from labline.core.errors import ConfigError
from labline.core.paths import config_dir

DESIGNS = ("leave_one_out", "add_one_in", "full_factorial")
MODES = ("max", "min")
KEYS = ("name", "description", "experiment", "overrides", "components", "design", "seeds", "folds", "metric", "mode",
        "workers")
MAX_FACTORIAL = 6
FULL, BASELINE = "full", "baseline"


@dataclass(frozen=True)
class Variant:
    """One model of the study: the full model's overrides plus those of the components it removes."""

    name: str
    removed: tuple[str, ...]


@dataclass
class AblationSpec:
    name: str
    experiment: str | None
    overrides: list[str]
    components: dict[str, list[str]]
    design: str = "leave_one_out"
    seeds: list[int] | None = None
    folds: int | None = None
    metric: str = "test/acc"
    mode: str = "max"
    workers: int = 1
    description: str = ""

    @property
    def full_overrides(self) -> list[str]:
        """The full model: experiment, file overrides, the split that ``folds`` asks for."""
        experiment = [f"experiment={self.experiment}"] if self.experiment else []
        folds = ["split=stratified_kfold", f"split.k={self.folds}"] if self.folds else []
        return [*experiment, *self.overrides, *folds]

    def variant_overrides(self, variant: Variant) -> list[str]:
        return [*self.full_overrides, *(o for c in variant.removed for o in self.components[c])]

    def variants(self) -> list[Variant]:
        """The design's variants, the full model first."""
        names = list(self.components)
        full = Variant(FULL, ())
        if self.design == "leave_one_out":
            return [full, *(Variant(f"no_{c}", (c,)) for c in names)]
        if self.design == "add_one_in":
            baseline = Variant(BASELINE, tuple(names))
            return [full, baseline, *(Variant(f"only_{c}", tuple(n for n in names if n != c)) for c in names)]
        subsets = [removed for k in range(len(names) + 1) for removed in itertools.combinations(names, k)]
        return [full, *(Variant(BASELINE if len(r) == len(names) else "no_" + "+".join(r), r) for r in subsets[1:])]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "experiment": self.experiment,
                "overrides": self.overrides, "components": self.components, "design": self.design, "seeds": self.seeds,
                "folds": self.folds, "metric": self.metric, "mode": self.mode, "workers": self.workers}


def available() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "ablation").glob("*.yaml"))


def _split_words(words: list[str]) -> tuple[str | None, list[str], list[str], str | None]:
    """``(ablation name, spec overrides, training overrides, parent run id)`` from command-line words."""
    name = parent = None
    spec_words, train_words = [], []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise ConfigError(word, "cannot parse this word", "KEY=VALUE, e.g. ablation=digits_cnn seeds=[0,1]")
        if key == "ablation":
            name = value
        elif key == "parent":
            parent = value
        elif key.split(".")[0] in KEYS:
            spec_words.append(word)
        else:
            train_words.append(word)
    return name, spec_words, train_words, parent


def _load_file(name: str) -> DictConfig:
    path = config_dir() / "ablation" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"ablation={name}", f"'{name}' is not an option of group 'ablation'", available() or "none yet")
    try:
        node = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(str(path), f"is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(str(path), "must be a mapping of ablation keys", KEYS)
    unknown = sorted(set(node.keys()) - set(KEYS))
    if unknown:
        raise ConfigError(f"ablation.{unknown[0]}", f"is not an ablation key (in {path.name})", KEYS)
    return node


def _apply(node: DictConfig, words: list[str], name: str) -> DictConfig:
    """Merge command-line words into the file; ``components=[a,b]`` selects a subset of the file's components."""
    for word in words:
        try:
            change = OmegaConf.from_dotlist([word])
        except OmegaConfBaseException as exc:
            raise ConfigError(word, f"cannot parse this override: {' '.join(str(exc).split())}") from None
        subset = change.get("components")
        if isinstance(subset, ListConfig):
            known = list(node.get("components") or {})
            for component in subset:
                if component not in known:
                    raise ConfigError("components", f"'{component}' is not a component of ablation '{name}'",
                                      known)
            node.components = {c: node.components[c] for c in subset}
            continue
        node = OmegaConf.merge(node, change)
    return node


def _strings(value: Any, key: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, f"must be a list of overrides, got {value!r}", "e.g. [backbone.norm=none]")
    return list(value)


def _seeds(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        if len(set(value)) != len(value):
            raise ConfigError("seeds", f"lists a seed twice: {value}")
        return list(value)
    raise ConfigError("seeds", f"must be a count or a list of non-negative integers, got {value!r}", "3 or [0, 1, 2]")


def _positive_int(value: Any, key: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def check(raw: dict[str, Any], name: str) -> AblationSpec:
    """Validate every key; a wrong one is a one-line ``ConfigError`` naming what would be valid."""
    components = raw.get("components")
    if not isinstance(components, dict) or not components:
        raise ConfigError("components", "an ablation needs at least one component", "{name: [overrides that remove it]}")
    components = {str(c): _strings(o, f"components.{c}") for c, o in components.items()}
    design = raw.get("design") or "leave_one_out"
    if design not in DESIGNS:
        raise ConfigError("design", f"'{design}' is not a design", DESIGNS)
    if design == "add_one_in" and len(components) < 2:
        raise ConfigError("design", "add_one_in needs at least 2 components (with one it is the full model)",
                          "leave_one_out")
    if design == "full_factorial" and len(components) > MAX_FACTORIAL:
        raise ConfigError("design", f"full_factorial over {len(components)} components is {2 ** len(components)} variants",
                          f"leave_one_out, or at most {MAX_FACTORIAL} components")
    mode = raw.get("mode") or "max"
    if mode not in MODES:
        raise ConfigError("mode", f"'{mode}' is not a direction", MODES)
    metric = raw.get("metric") or "test/acc"
    if not isinstance(metric, str) or not metric.startswith(("test/", "val/", "train/")):
        raise ConfigError("metric", f"'{metric}' is not a metric a run logs",
                          "a test metric (test/acc, test/f1_macro, test/loss) or a validation curve (val/acc, val/loss)")
    folds = raw.get("folds")
    experiment = raw.get("experiment")
    workers = _positive_int(raw.get("workers", 1), "workers", 1)
    if workers > (os.cpu_count() or 1):
        raise ConfigError("workers", f"{workers} workers on {os.cpu_count()} cores", f"1 .. {os.cpu_count()}")
    return AblationSpec(name=str(raw.get("name") or name), experiment=str(experiment) if experiment else None,
                        overrides=_strings(raw.get("overrides") or [], "overrides"), components=components, design=design,
                        seeds=_seeds(raw.get("seeds", 3)), folds=None if folds is None else _positive_int(folds, "folds", 2),
                        metric=metric, mode=mode, workers=workers, description=str(raw.get("description") or ""))


def load(words: list[str]) -> tuple[AblationSpec | None, str | None]:
    """``(spec, parent run id)`` from ``labline ablate``/``report`` words; the spec is None when only a parent is named."""
    name, spec_words, train_words, parent = _split_words(words)
    if name is None:
        if parent is not None and not spec_words and not train_words:
            return None, parent
        raise ConfigError("ablation", "name the study: ablation=NAME", available() or "none yet")
    node = _apply(_load_file(name), spec_words, name)
    raw = OmegaConf.to_container(node, resolve=True)
    spec = check(raw, name)  # type: ignore[arg-type]
    spec.overrides = [*spec.overrides, *train_words]
    return spec, parent
