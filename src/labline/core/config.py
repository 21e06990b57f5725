"""Composing ``conf/`` and checking what a user typed before anything runs.

Hydra reports a bad override as a multi-line traceback and exit code 1. labline
composes once up front with Hydra's compose API, turns each failure into one
line that names the key and the valid choices, and exits with code 2 — so no
MLflow run is ever created for a typo.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf

from labline.core.errors import ConfigError
from labline.core.paths import config_dir

CONFIG_NAME = "train"


@contextmanager
def hydra_context(conf: Path | None = None) -> Iterator[None]:
    """Initialise Hydra's compose API over ``conf/``.

    Inside a running Hydra app (a ``labline train`` job) its search path is reused;
    otherwise any stale global state (e.g. from an earlier app in this process) is
    cleared, so each call composes from exactly the ``conf/`` it names.
    """
    from hydra.core.hydra_config import HydraConfig

    if GlobalHydra.instance().is_initialized() and HydraConfig.initialized():
        yield
        return
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str((conf or config_dir()).resolve()), version_base="1.3"):
        yield


def group_options(group: str) -> list[str]:
    """The options of a config group, as a user would type them."""
    loader = GlobalHydra.instance().config_loader()
    return sorted(loader.get_group_options(group))


def config_groups() -> list[str]:
    """Top-level config groups of ``conf/`` (hydra's own excluded)."""
    repo = GlobalHydra.instance().config_loader().get_sources()
    groups: set[str] = set()
    for source in repo:
        if source.provider == "hydra":
            continue
        if hasattr(source, "list"):
            groups.update(g for g in source.list("", results_filter=None) if source.is_group(g))
    groups.discard("hydra")
    return sorted(groups)


def _parse(overrides: Sequence[str]) -> list[Any]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        bad = next((o for o in overrides if o in str(exc)), overrides[0] if overrides else "")
        raise ConfigError(bad or "overrides", "cannot parse this override", "KEY=VALUE or GROUP=OPTION") from None


def without_sweeps(overrides: Sequence[str]) -> list[str]:
    """The words of a ``-m`` command that are not sweeps (``a=1,2``, ``x=range(..)``): what composes as one config."""
    return [o.input_line for o in _parse(overrides) if not o.is_sweep_override()]


def _is_group(name: str) -> bool:
    loader = GlobalHydra.instance().config_loader()
    return bool(name) and not name.startswith("hydra") and loader.repository.group_exists(name)


def _explain_missing(exc: MissingConfigException, parsed: list[Any]) -> ConfigError:
    for ov in parsed:
        key = ov.key_or_group
        if _is_group(key) and isinstance(ov.value(), str):
            options = group_options(key)
            if ov.value() not in options:
                return ConfigError(f"{key}={ov.value()}", f"'{ov.value()}' is not an option of group '{key}'", options)
    return ConfigError("config", " ".join(str(exc).split("\n")[:1]))


def _explain_key(exc: HydraException, parsed: list[Any], base: DictConfig) -> ConfigError:
    text = str(exc)
    candidates = [ov for ov in parsed if not _is_group(ov.key_or_group)]
    quoted = [ov for ov in candidates if f"'{ov.key_or_group}'" in text]
    for ov in quoted or [ov for ov in candidates if ov.key_or_group.split(".")[-1] in text]:
        key = ov.key_or_group
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(base, parent_key) if parent_key else base
        if isinstance(parent, DictConfig):
            valid = sorted(str(k) for k in parent.keys())
            return ConfigError(key, f"'{leaf}' is not a config key", valid)
        return ConfigError(key, "is not a config key")
    return ConfigError("config", text.splitlines()[0])


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(value), type(value).__name__)


def _compatible(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return not isinstance(value, (list, dict))
    if isinstance(default, (list, ListConfig)):
        return isinstance(value, (list, ListConfig))
    if isinstance(default, (dict, DictConfig)):
        return isinstance(value, (dict, DictConfig))
    return True


def _check_types(parsed: list[Any], base: DictConfig, cfg: DictConfig) -> None:
    """An override must keep the type of the default it replaces (int stays int)."""
    for ov in parsed:
        key = ov.key_or_group
        if ov.is_delete() or ov.is_sweep_override() or _is_group(key) or key.startswith("hydra"):
            continue
        default = OmegaConf.select(base, key, default=None, throw_on_missing=False)
        if isinstance(default, (DictConfig, ListConfig)):
            default = OmegaConf.to_container(default)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value)
        if not _compatible(default, value):
            raise ConfigError(key, f"expected {_type_name(default)} like {default!r}, got {ov.input_line.split('=', 1)[1]!r}")


def _check_added(parsed: list[Any], base: DictConfig) -> None:
    """``+key=value`` may add a setting inside a section (a Lightning ``trainer`` argument, a constructor
    argument); a new top-level key is read by nothing, so it is a typo or a misplaced setting."""
    for ov in parsed:
        top = ov.key_or_group.split(".")[0].split("@")[0]
        if (ov.is_add() or ov.is_force_add()) and top not in base and not top.startswith("hydra") and not _is_group(top):
            raise ConfigError(ov.key_or_group, "adds a top-level key nothing reads",
                              sorted(str(k) for k in base.keys()))


def compose_config(overrides: Sequence[str] = (), conf: Path | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` with overrides, or raise a one-line ``ConfigError``."""
    with hydra_context(conf):
        parsed = _parse(overrides)
        group_overrides = [o.input_line for o in parsed if _is_group(o.key_or_group)]
        try:
            base = compose(CONFIG_NAME, overrides=group_overrides)
        except MissingConfigException as exc:
            raise _explain_missing(exc, parsed) from None
        except HydraException as exc:
            raise ConfigError("config", str(exc).splitlines()[0]) from None
        _check_added(parsed, base)
        if len(group_overrides) == len(parsed):
            return base  # nothing but group choices: the second composition would be the same config
        try:
            cfg = compose(CONFIG_NAME, overrides=list(overrides))
        except MissingConfigException as exc:
            raise _explain_missing(exc, parsed) from None
        except HydraException as exc:
            raise _explain_key(exc, parsed, base) from None
        _check_types(parsed, base, cfg)
    return name_dataset(cfg)


def name_dataset(cfg: DictConfig) -> DictConfig:
    """A dataset without a ``name`` (``data=npz`` and other own files) is named after its file or folder's stem:
    run names, the ``dataset`` tag and the data folders then say ``wine``, not a placeholder. Applied wherever a
    config is composed (``labline train``'s job, ``labline params``, studies), so every stage sees one name."""
    data = cfg.get("data")
    if isinstance(data, DictConfig) and data.get("name") is None and isinstance(data.get("source"), DictConfig):
        where = next((OmegaConf.select(data.source, k, throw_on_missing=False) for k in ("path", "root")
                      if OmegaConf.select(data.source, k, throw_on_missing=False) not in (None, "???")), None)
        if where is not None:
            data.name = Path(str(where)).stem or "data"
    return cfg


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain dict: what params.yaml and MLflow record."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` for MLflow params and DVC-style keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
