"""The Optuna side of a sweep: sampler, pruner, storage, and a study shared safely by workers.

Trials are asked and told by labline's own loop (not ``Study.optimize``), so
that the check "does the study still need a trial?" and the ``ask`` happen under
one lock: parallel workers then never overshoot ``n_trials``, and a re-run
resumes to exactly ``n_trials`` finished trials. On PostgreSQL the lock is held
by the database (a transaction-scoped advisory lock keyed by the study), so it
holds across machines; elsewhere (SQLite, journal files: one machine) it is a
file lock beside the project.

A trial whose process died stops sending heartbeats: the next worker to look
fails it and Optuna's ``RetryHeartbeatStaleTrialCallback`` queues a copy
(``WAITING``, same parameters), which the next ``ask`` takes.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler, GridSampler
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from labline.core.errors import ConfigError
from labline.core.locks import file_lock
from labline.core.paths import project_root
from labline.studies.sweep.space import SearchSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PRUNERS: dict[str, type] = {"median": optuna.pruners.MedianPruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                            "hyperband": optuna.pruners.HyperbandPruner, "none": optuna.pruners.NopPruner}
# Median: a trial is judged from its second epoch trained on (Optuna's default: from its first report), once five
# trials have completed; until then every trial runs to the end, which is why median suits long studies.
PRUNER_DEFAULTS = {"median": {"n_startup_trials": 5, "n_warmup_steps": 2}}


class _AskTellGridSampler(GridSampler):
    """GridSampler calls ``study.stop()`` once the grid is used up, which raises outside
    ``Study.optimize``; the sweep loop already caps ``n_trials`` at the grid's size."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


SAMPLERS: dict[str, type] = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                             "grid": _AskTellGridSampler, "cmaes": optuna.samplers.CmaEsSampler,
                             "nsga2": optuna.samplers.NSGAIISampler}


def storage_location(url: str | None) -> str:
    """The storage as a URL (default: SQLite in the project), or a journal file's absolute path
    (relative paths are the project's)."""
    url = url or f"sqlite:///{project_root() / 'optuna.db'}"
    return url if "://" in url or Path(url).is_absolute() else str(project_root() / url)


# A killed trial is retried this many times (each retry continues from its predecessor's last checkpoint).
MAX_RETRIES = 3


def queue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a copy of a killed trial (``WAITING``, same parameters) with Optuna 5's
    ``RetryHeartbeatStaleTrialCallback`` (its ``RetryFailedTrialCallback`` alias is deprecated)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES, inherit_intermediate_values=False)(study, trial)


def retry_stale(on_stale: Callable[[optuna.Study, FrozenTrial], None]) -> Callable[[optuna.Study, FrozenTrial], None]:
    """The storage's heartbeat-stale callback: record the dead trial (its MLflow run KILLED), then queue its retry."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        on_stale(study, trial)
        queue_retry(study, trial)

    return callback


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the trial this one retries (the last of a chain of retries), or None."""
    history = trial.system_attrs.get("retry_history") or []
    return history[-1] if history else None


def make_storage(url: str | None, heartbeat_interval: int, on_stale: Callable[[optuna.Study, FrozenTrial], None],
                 create_tables: bool = True) -> BaseStorage:
    """An RDB URL (SQLite by default) gets heartbeats so a killed trial is detected and retried; anything else is a
    journal file. ``postgresql://`` uses psycopg 3 (a labline dependency), as SQLAlchemy 2.1 maps it."""
    url = storage_location(url)
    if "://" not in url:
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval or None,
                              heartbeat_stale_trial_callback=retry_stale(on_stale), skip_table_creation=not create_tables)
    except (ImportError, ValueError, OSError) as exc:
        raise ConfigError("hydra.sweeper.storage", f"cannot open {url}: {' '.join(str(exc).split())}",
                          "sqlite:///path.db, postgresql://user@host/db, or a journal file path") from None


def _options(spec: dict[str, Any], chosen: type, family: dict[str, type], key: str) -> dict[str, Any]:
    """The keys of ``spec`` that ``chosen`` accepts. Keys meant for another member of the family are
    dropped, so a preset's ``population_size`` does not block ``sampler.name=random`` on the command
    line; a key no member accepts is a typo."""
    def accepted(cls: type) -> set[str]:
        return set(inspect.signature(cls).parameters)

    known = set().union(*(accepted(cls) for cls in family.values()))
    unknown = sorted(set(spec) - known - {"name"})
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"no {key.rsplit('.', 1)[-1]} takes this option",
                          sorted(accepted(chosen) - {"seed", "search_space"}))
    return {k: v for k, v in spec.items() if k in accepted(chosen) and k != "seed"}


def make_sampler(spec: dict[str, Any], space: SearchSpace, seed: int | None) -> BaseSampler:
    """``seed`` is already made distinct per worker and per resume (see ``sampler_seed``)."""
    name = spec.get("name", "tpe")
    if name not in SAMPLERS:
        raise ConfigError("hydra.sweeper.sampler.name", f"unknown sampler '{name}'", SAMPLERS)
    if name == "cmaes" and len(space.categorical()) == len(space.distributions):
        raise ConfigError("hydra.sweeper.sampler.name", f"cmaes samples float and int parameters, and {space.categorical()} "
                                                        "are all categorical", ["tpe", "random", "grid"])
    options = _options(spec, SAMPLERS[name], SAMPLERS, "hydra.sweeper.sampler")
    try:
        if name == "grid":
            return _AskTellGridSampler(space.grid(), seed=seed, **options)
        if name == "cmaes":
            return _cma_es(seed, options)
        return SAMPLERS[name](seed=seed, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError("hydra.sweeper.sampler", f"{name}: {' '.join(str(exc).split())}") from None


def _cma_es(seed: int | None, options: dict[str, Any]) -> BaseSampler:
    """CMA-ES models float and int parameters jointly; Optuna hands every other parameter to an
    independent sampler (random by default) and warns once per trial and parameter. labline makes that
    TPE, which learns from the study's history where random does not, and says it once at the start
    (``cma_es_note``) instead of per trial. (A space with nothing but categorical parameters, which
    leaves CMA-ES nothing to do, is refused before.)"""
    options = {"independent_sampler": optuna.samplers.TPESampler(seed=seed), "warn_independent_sampling": False, **options}
    return optuna.samplers.CmaEsSampler(seed=seed, **options)


def cma_es_note(spec: dict[str, Any], space: SearchSpace) -> str | None:
    """One line telling which parameters CMA-ES leaves to TPE, or None."""
    categorical = space.categorical()
    if spec.get("name") != "cmaes" or not categorical:
        return None
    rest = [key for key in space.distributions if key not in categorical]
    return f"cmaes: {', '.join(rest)} sampled by CMA-ES; categorical {', '.join(categorical)} independently by TPE"


def make_pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    name = spec.get("name", "hyperband")
    if name not in PRUNERS:
        raise ConfigError("hydra.sweeper.pruner.name", f"unknown pruner '{name}'", PRUNERS)
    options = {**PRUNER_DEFAULTS.get(name, {}), **_options(spec, PRUNERS[name], PRUNERS, "hydra.sweeper.pruner")}
    try:
        return PRUNERS[name](**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError("hydra.sweeper.pruner", f"{name}: {' '.join(str(exc).split())}") from None


def sampler_seed(seed: int | None, trials_so_far: int, worker: int) -> int | None:
    """Same seed, same study history, same worker -> same draws; a resumed study or a second
    worker gets fresh ones instead of replaying the first trials' parameters."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, trials_so_far, worker]).generate_state(1)[0])


@dataclass
class Budget:
    """What the study still needs, judged from the storage alone, so every worker of a session agrees."""

    n_trials: int
    max_failures: int
    session: str

    def failures(self, trials: list[FrozenTrial]) -> int:
        return sum(t.state == TrialState.FAIL and t.user_attrs.get("session") == self.session
                   and "fail_reason" in t.user_attrs for t in trials)

    def decide(self, trials: list[FrozenTrial]) -> str:
        """``stop`` (budget spent or too many failures), ``wait`` (others' trials may still fill it) or ``ask``."""
        finished = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished >= self.n_trials or self.failures(trials) >= self.max_failures:
            return "stop"
        return "wait" if finished + running >= self.n_trials else "ask"


def lock_key(study_name: str) -> int:
    """The study's advisory-lock key: 64 signed bits of a hash of its name (studies share one database)."""
    return int.from_bytes(hashlib.sha256(f"labline-study:{study_name}".encode()).digest()[:8], "big", signed=True)


class SharedStudy:
    """One Optuna study, opened by the sweep and by each worker process."""

    def __init__(self, study: optuna.Study, storage: BaseStorage, lock_path: Path, heartbeat_interval: int):
        self.study, self.storage, self.lock_path = study, storage, lock_path
        self.heartbeats = isinstance(storage, RDBStorage) and heartbeat_interval > 0
        self.heartbeat_interval = heartbeat_interval
        self.in_database = isinstance(storage, RDBStorage) and storage.engine.dialect.name == "postgresql"
        self.lock_wait = 0.0  # seconds this process waited for the budget lock (benches/coordination.py)

    @classmethod
    def open(cls, name: str, storage: BaseStorage, directions: list[str], create: bool,
             heartbeat_interval: int) -> SharedStudy:
        lock = project_root() / ".labline" / "sweeps" / f"{name}.lock"
        with file_lock(lock):
            if create:
                study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
            else:
                study = optuna.load_study(study_name=name, storage=storage)
        wanted = [optuna.study.StudyDirection[d.upper()] for d in directions]
        if study.directions != wanted:
            have = [d.name.lower() for d in study.directions]
            raise ConfigError("hydra.sweeper.direction", f"study '{name}' already exists with direction {have}",
                              "the same directions, or another hydra.sweeper.study_name")
        return cls(study, storage, lock, heartbeat_interval)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across every process of the study: in PostgreSQL a ``pg_advisory_xact_lock`` on the study's
        key, held by a transaction that ends after the block (so whatever the block asked for is committed
        before the next worker looks); on one machine a file lock."""
        start = time.monotonic()
        if not self.in_database:
            with file_lock(self.lock_path):
                self.lock_wait += time.monotonic() - start
                yield
            return
        from sqlalchemy import text

        with self.storage.engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(self.study.study_name)})
            self.lock_wait += time.monotonic() - start
            yield

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def fail_stale(self) -> None:
        """Trials whose process died (SIGKILL, power loss) stop counting as running."""
        if self.heartbeats:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def fail_orphans(self, session: str, on_fail: Callable[[optuna.Study, FrozenTrial], None]) -> None:
        """Without heartbeats (journal files), RUNNING trials of an earlier invocation are orphans
        once a new one starts: one sweep command per journal-backed study at a time."""
        if self.heartbeats:
            return
        with self.locked():
            for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.user_attrs.get("session") != session:
                    self.study.tell(trial.number, state=TrialState.FAIL)
                    on_fail(self.study, trial)

    def ask(self, space: SearchSpace, attrs: dict[str, Any]) -> optuna.Trial:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            trial = self.study.ask(space.distributions)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return trial

    @contextmanager
    def heartbeat(self, trial: optuna.Trial) -> Iterator[None]:
        """Record that the trial's process is alive until the block ends."""
        if not self.heartbeats:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while True:
                self.storage.record_heartbeat(trial._trial_id)
                if stop.wait(self.heartbeat_interval):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
