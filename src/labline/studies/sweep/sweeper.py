"""labline's Optuna sweeper: ``labline train -m hparams_search=<name>`` runs (or resumes) a study.

One invocation is a *session*. Its process validates the whole search space
(every option composes) before anything is created, creates the study and the
MLflow parent run once, then runs trials: in-process by default, or through
``n_jobs`` worker processes (the same command re-executed with the session in
its environment) that share the study storage. Each trial is one Hydra job
launched with the trial's overrides; the trial itself reaches the job through
``labline.studies.sweep.context``, so a Lightning callback can report and prune.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from labline.core.config import compose_config
from labline.core.errors import ConfigError, exit_with
from labline.core.instantiate import instantiate
from labline.core.interrupts import Interrupted
from labline.core.paths import config_dir
from labline.studies.cluster import slurm
from labline.studies.sweep import best as best_file
from labline.studies.sweep.context import ActiveTrial, activate
from labline.studies.sweep.plots import importance_caveat, study_plots
from labline.studies.sweep.settings import SweeperSettings, as_list
from labline.studies.sweep.space import SYNTAX, SearchSpace, build_space
from labline.studies.sweep.study import (
    Budget,
    SharedStudy,
    cma_es_note,
    make_pruner,
    make_sampler,
    make_storage,
    queue_retry,
    retried_from,
    sampler_seed,
    storage_location,
)
from labline.studies.sweep.tracking import StudyTracking, best_trials, summarize
from labline.tracking.lifecycle import PARENT_ENV, RunHandle

SESSION_ENV = "LABLINE_SWEEP_SESSION"
WORKER_ENV = "LABLINE_SWEEP_WORKER"
COMPLEXITY = ("params", "trainable_params", "flops", "macs")
BACKENDS = ("local", "slurm")
ARRAY_ATTR = "slurm_array"
DIRECTIONS = ("maximize", "minimize")

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Plan:
    """A validated sweep: everything a session or worker needs, checked before any trial."""

    study_name: str
    storage: str | None
    directions: list[str]
    objectives: list[str]
    space: SearchSpace
    n_trials: int
    threads: int | None
    session: str


class OptunaSweep:
    def __init__(self, settings: Mapping[str, Any]):
        plain = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in settings.items()}
        self.settings = SweeperSettings(**plain)
        self.slurm_values = plain.get("slurm")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function,
                                                                config=config)

    def sweep(self, arguments: list[str]) -> dict[str, Any] | None:
        try:
            plan = self._plan(arguments)
            tracking = StudyTracking(instantiate(self.config.logger, "logger"))
            worker = os.environ.get(WORKER_ENV)
            storage = make_storage(plan.storage, self.settings.heartbeat_interval, tracking.mark_interrupted,
                                   create_tables=worker is None)
            shared = SharedStudy.open(plan.study_name, storage, plan.directions, create=worker is None,
                                      heartbeat_interval=self.settings.heartbeat_interval)
            shared.study.sampler = make_sampler(self.settings.sampler, plan.space,
                                                sampler_seed(self.settings.sampler.get("seed", 0), len(shared.trials()),
                                                             int(worker or 0)))
            shared.study.pruner = make_pruner(self.settings.pruner)
        except ConfigError as err:
            exit_with(err)
        if worker is not None:
            self._loop(plan, shared, tracking, int(worker))
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            shared.study.set_metric_names(self._metric_names(plan.objectives))
        return self._session(plan, shared, tracking)

    def _metric_names(self, objectives: list[str]) -> list[str]:
        """The objectives as the trials' MLflow runs name them (what the Optuna dashboard then shows): ``best_value``
        is ``best/<task.monitor>`` (the monitor at the best epoch), a complexity objective ``model/<name>``."""
        return [f"best/{self.config.task.monitor}" if o == "best_value" else f"model/{o}" if o in COMPLEXITY else o
                for o in objectives]

    # -- planning ------------------------------------------------------------------------------

    def _plan(self, arguments: list[str]) -> Plan:
        s = self.settings
        directions = [str(d).lower() for d in as_list(s.direction)]
        if any(d not in DIRECTIONS for d in directions):
            raise ConfigError("hydra.sweeper.direction", f"got {directions}", DIRECTIONS)
        objectives = [str(o) for o in as_list(s.objective)]
        if len(objectives) != len(directions):
            raise ConfigError("hydra.sweeper.objective", f"{len(objectives)} objective(s) for {len(directions)} direction(s)",
                              "one objective per direction, e.g. [best_value, flops] with [maximize, minimize]")
        if s.backend not in BACKENDS:
            raise ConfigError("hydra.sweeper.backend", f"unknown backend {s.backend!r}", BACKENDS)
        self.slurm = slurm.SlurmSettings.from_config(self.slurm_values, "hydra.sweeper.slurm")
        if len(directions) > 1 and s.pruner.get("name") != "none":
            raise ConfigError("hydra.sweeper.pruner.name", "Optuna cannot prune a multi-objective study", "none")
        self._check_monitor(directions[0], objectives[0])
        for key in ("n_trials", "n_jobs", "max_failures"):
            if not isinstance(getattr(s, key), int) or getattr(s, key) < 1:
                raise ConfigError(f"hydra.sweeper.{key}", f"must be a positive integer, got {getattr(s, key)!r}")
        space = build_space(s.params or {}, arguments, OverridesParser.create(config_loader=self.hydra_context.config_loader))
        if not space.distributions:
            raise ConfigError("hydra.sweeper.params", "no parameter to search: give at least one sweep", SYNTAX)
        if os.environ.get(WORKER_ENV) is None:  # workers run what their session already checked
            for probe in space.probes():
                compose_config(probe)
        n_trials = s.n_trials
        if s.sampler.get("name") == "grid":
            n_trials = min(n_trials, math.prod(len(v) for v in space.grid().values()))
        cores = len(os.sched_getaffinity(0))
        return Plan(study_name=str(s.study_name or self.config.hydra.runtime.choices.get("hparams_search") or "labline"),
                    storage=s.storage, directions=directions, objectives=objectives, space=space, n_trials=n_trials,
                    threads=self._threads(s.backend, s.n_jobs, cores),
                    session=os.environ.get(SESSION_ENV) or uuid.uuid4().hex[:12])

    def _threads(self, backend: str, n_jobs: int, cores: int) -> int | None:
        """Each worker's torch threads: on SLURM the CPUs each array task is given (``slurm.cpus_per_task``), locally
        an equal share of this machine's cores; None (the config's ``threads``) for one local worker."""
        if backend == "slurm":
            return self.slurm.cpus_per_task
        return max(1, cores // n_jobs) if n_jobs > 1 else None

    def _check_monitor(self, direction: str, objective: str) -> None:
        """``best_value`` is ``task.monitor`` at its best epoch: maximising a loss is a config mistake."""
        mode = self.config.task.get("monitor_mode")
        expected = {"max": "maximize", "min": "minimize"}.get(mode)
        if objective == "best_value" and expected and direction != expected:
            raise ConfigError("hydra.sweeper.direction", f"{direction}, but task.monitor={self.config.task.monitor} is "
                                                         f"best at its {mode} (task.monitor_mode={mode})", expected)

    # -- the session: study, MLflow parent, trials, conclusion --------------------------------------

    def _session(self, plan: Plan, shared: SharedStudy, tracking: StudyTracking) -> dict[str, Any]:
        shared.fail_orphans(plan.session, tracking.mark_interrupted)
        s = self.settings
        info = {"study": plan.study_name, "storage": _public_url(plan.storage), "sampler": _spec(s.sampler),
                "pruner": _spec(s.pruner), "direction": ",".join(plan.directions), "objective": ",".join(plan.objectives)}
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in shared.trials())
        print(f"study '{plan.study_name}' in {_public_url(plan.storage)}: {done} of {plan.n_trials} trials finished; "
              f"jobs in {sweep_dir}")
        if note := cma_es_note(s.sampler, plan.space):
            print(note)
        try:
            # The parent ends FINISHED, FAILED on an error, KILLED on Ctrl-C or SIGTERM (tracking.lifecycle).
            with tracking.parent(shared.study, info, {"n_trials": str(plan.n_trials), "n_jobs": str(s.n_jobs)},
                                 plan.space.describe()) as parent:
                if s.backend == "slurm":
                    if not self._run_slurm(plan, shared, tracking, parent, sweep_dir):
                        parent.keep_open()  # the array goes on; the same command again concludes
                        return {}
                elif s.n_jobs == 1:
                    self._loop(plan, shared, tracking, worker=0)
                else:
                    self._run_workers(plan, shared, parent.run_id, sweep_dir)
                summary = self._conclude(plan, shared, parent, sweep_dir)
        except KeyboardInterrupt:  # Ctrl-C outside training (between trials, in the coordinator)
            raise Interrupted(signal.SIGINT) from None  # the CLI's clean exit (130) with its resume hint
        budget = Budget(plan.n_trials, self.settings.max_failures, plan.session)
        if budget.failures(shared.trials()) >= budget.max_failures:
            sys.exit(1)  # the study stopped short of n_trials: scripts and CI must notice
        return summary

    def _loop(self, plan: Plan, shared: SharedStudy, tracking: StudyTracking, worker: int) -> None:
        budget = Budget(plan.n_trials, self.settings.max_failures, plan.session)
        preempted = os.environ.pop(slurm.RESUME_ENV, None)
        if preempted:  # a requeued SLURM task continues the trial it was preempted in, into the same MLflow run
            frozen = shared.trials()[int(preempted)]
            if frozen.state == TrialState.RUNNING:
                print(f"requeued: continuing trial {frozen.number}", flush=True)
                trial = optuna.trial.Trial(shared.study, frozen._trial_id)
                print(_describe(self._run_trial(plan, shared, tracking, trial, worker), plan.objectives), flush=True)
        while True:
            shared.fail_stale()
            with shared.locked():
                trials = shared.trials()
                decision = budget.decide(trials)
                trial = shared.ask(plan.space, {"session": plan.session, "worker": worker}) if decision == "ask" else None
            if decision == "stop":
                if budget.failures(trials) >= budget.max_failures:
                    print(f"stopping: {budget.failures(trials)} trials failed in this run "
                          f"(hydra.sweeper.max_failures={budget.max_failures})")
                return
            if trial is None:
                time.sleep(max(1, self.settings.heartbeat_interval))
                continue
            print(_describe(self._run_trial(plan, shared, tracking, trial, worker), plan.objectives), flush=True)

    def _run_trial(self, plan: Plan, shared: SharedStudy, tracking: StudyTracking, trial: optuna.Trial,
                   worker: int) -> FrozenTrial:
        overrides = plan.space.job_overrides(trial.params)
        trial.set_user_attr("overrides", overrides)
        active = ActiveTrial(trial, plan.study_name, prune=len(plan.directions) == 1,
                             measure_complexity=any(o in COMPLEXITY for o in plan.objectives),
                             tags={"sweep_worker": str(worker)}, start_from=self._continue_from(shared, trial))
        # Not part of the trial's configuration: how its run is named, and its share of the cores.
        launch = [*overrides, f"run_name={plan.study_name}-trial-{trial.number}",
                  *([f"threads={plan.threads}"] if plan.threads else [])]
        result: Any = None
        reason: str | None = None
        with shared.heartbeat(trial), activate(active):
            try:
                job = self.launcher.launch([launch], initial_job_idx=trial.number)[0]
                trial.set_user_attr("output_dir", str(job.hydra_cfg.hydra.runtime.output_dir))
                result = job.return_value  # re-raises what the job raised
            except (Exception, SystemExit) as exc:  # SystemExit: a config error the job reported and exited on
                reason = _failure(exc)
            except Interrupted as exc:
                if exc.signum != slurm.PREEMPT_SIGNAL:
                    self._interrupted(shared, tracking, trial, active, exc)
                else:  # preempted on SLURM: the trial stays RUNNING; the requeued task continues it (should the
                    # requeue take longer than the heartbeat grace, another worker fails and retries it instead)
                    os.environ[slurm.RESUME_ENV] = str(trial.number)
                raise
            except BaseException as exc:  # Ctrl-C / SIGTERM: record the trial, queue its retry, stop
                self._interrupted(shared, tracking, trial, active, exc)
                raise
        state, values, reason = _judge(result, reason, active, plan.objectives)
        return self._tell(shared, tracking, trial, active, state, values, reason)

    def _interrupted(self, shared: SharedStudy, tracking: StudyTracking, trial: optuna.Trial, active: ActiveTrial,
                     exc: BaseException) -> None:
        reason = f"interrupted: {exc or type(exc).__name__}"
        frozen = self._tell(shared, tracking, trial, active, TrialState.FAIL, None, reason)
        if shared.heartbeats:
            queue_retry(shared.study, frozen)

    @staticmethod
    def _continue_from(shared: SharedStudy, trial: optuna.Trial) -> Path | None:
        """A retried trial continues from the newest checkpoint its killed predecessor left (when this process
        can see it: the same machine, or a shared file system), into a new MLflow run; it does not inherit the
        predecessor's run."""
        from labline.runs.resume import latest_checkpoint

        frozen = shared.study.get_trials(deepcopy=False)[trial.number]
        if retried_from(frozen) is None:
            return None
        trial.set_user_attr("mlflow_run_id", "")
        trial.set_user_attr("retry_of", retried_from(frozen))
        folder = frozen.user_attrs.get("run_folder")
        checkpoint = latest_checkpoint(Path(folder)) if folder else None
        if checkpoint is not None:
            print(f"trial {trial.number} retries trial {retried_from(frozen)}: continuing from {checkpoint}", flush=True)
        return checkpoint

    def _tell(self, shared: SharedStudy, tracking: StudyTracking, trial: optuna.Trial, active: ActiveTrial,
              state: TrialState, values: list[float] | None, reason: str | None) -> FrozenTrial:
        if active.reporter is not None:
            trial.set_user_attr("epochs", active.reporter.epochs)
        if reason:
            trial.set_user_attr("fail_reason", reason)
        shared.study.tell(trial, values=values, state=state)
        frozen = shared.study.get_trials(deepcopy=False)[trial.number]
        tracking.record_trial(frozen)
        return frozen

    def _worker_argv(self, sweep_dir: Path) -> list[str]:
        """The CLI words of a worker: this same command, its jobs in this session's folder."""
        return ["train", "--multirun", *self.config.hydra.overrides.task, *self.config.hydra.overrides.hydra,
                f"hydra.sweep.dir={sweep_dir}"]

    @staticmethod
    def _progress(shared: SharedStudy, plan: Plan) -> Any:
        """A function printing each trial that finished since it was last called (the launching process's view)."""
        reported = {t.number for t in shared.trials() if t.state.is_finished()}

        def report() -> None:
            for frozen in shared.trials():
                if frozen.state.is_finished() and frozen.number not in reported:
                    reported.add(frozen.number)
                    print(_describe(frozen, plan.objectives), flush=True)

        return report

    def _run_slurm(self, plan: Plan, shared: SharedStudy, tracking: StudyTracking, parent: RunHandle,
                   sweep_dir: Path) -> bool:
        """``n_jobs`` workers as a SLURM job array (each asks the study for trials in its own process, so pruning
        works as here); returns whether the array has ended (false: ``wait: false``, it goes on without us).

        A study whose earlier array is still queued or running is not submitted again: this command watches it."""
        import submitit

        cfg = self.slurm
        folder = Path(cfg.folder) if cfg.folder else sweep_dir / "slurm"
        pending = [submitit.SlurmJob(folder=Path(f), job_id=j) for f, j in shared.study.user_attrs.get(ARRAY_ATTR, [])]
        still = slurm.active([j.job_id for j in pending])
        jobs = [j for j in pending if j.job_id in still]
        if jobs:
            print(f"SLURM array {jobs[0].job_id.split('_')[0]} of this study still active: watching it")
        elif Budget(plan.n_trials, self.settings.max_failures, plan.session).decide(shared.trials()) != "stop":
            env = {SESSION_ENV: plan.session, PARENT_ENV: parent.run_id, **_forwarded()}
            argv = self._worker_argv(sweep_dir)
            jobs = slurm.submit_array(cfg, folder, f"labline-{plan.study_name}", "labline.cli:main",
                                      [({**env, WORKER_ENV: str(i)}, (argv,)) for i in range(self.settings.n_jobs)])
            shared.study.set_user_attr(ARRAY_ATTR, [[str(folder), j.job_id] for j in jobs])
        if not cfg.wait:
            print("not waiting (hydra.sweeper.slurm.wait=false): run the same command again to watch and conclude")
            return False
        report = self._progress(shared, plan)
        if cfg.local_worker:
            self._loop(plan, shared, tracking, worker=self.settings.n_jobs)
        for problem in slurm.watch(jobs, report):
            print(problem, file=sys.stderr)
        return True

    def _run_workers(self, plan: Plan, shared: SharedStudy, parent_run_id: str, sweep_dir: Path) -> None:
        """``n_jobs`` processes run this same command against the study; this one reports progress."""
        command = [sys.executable, "-m", "labline.cli", *self._worker_argv(sweep_dir)]
        env = {**os.environ, SESSION_ENV: plan.session, PARENT_ENV: parent_run_id}
        workers = []
        try:
            for index in range(self.settings.n_jobs):
                log = sweep_dir / f"worker-{index}.log"
                with open(log, "w") as fh:
                    workers.append((subprocess.Popen(command, env={**env, WORKER_ENV: str(index)}, stdout=fh,
                                                     stderr=subprocess.STDOUT), log))
            print(f"{len(workers)} workers, {plan.threads} torch thread(s) each; logs: {sweep_dir}/worker-*.log")
            report = self._progress(shared, plan)
            while True:
                running = [p for p, _ in workers if p.poll() is None]
                report()
                if not running:
                    break
                time.sleep(2)
        finally:
            for process, _ in workers:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
        for process, log in workers:
            if process.returncode != 0:
                print(f"worker exited with code {process.returncode}; see {log}", file=sys.stderr)

    def _conclude(self, plan: Plan, shared: SharedStudy, parent: RunHandle, sweep_dir: Path) -> dict[str, Any]:
        study = shared.study
        summary = summarize(study, plan.objectives)
        plots, skipped = study_plots(study, plan.objectives, sweep_dir / "plots")
        for name, why in skipped.items():
            print(f"plot {name} skipped: {why}")
        if "param_importances" not in skipped and (caveat := importance_caveat(study)):
            print(f"plot param_importances: {caveat}")
        best = best_trials(study)
        path = self._write_best(plan, best[0]) if best else None
        StudyTracking.finish(parent, summary, plots, path)
        counts = ", ".join(f"{summary[k]} {k[2:]}" for k in ("n_complete", "n_pruned", "n_fail"))
        print(f"study '{plan.study_name}': {counts}; {summary['epochs_total']} epochs in all")
        if best:
            print(f"best trial {best[0].number}: {_values(plan.objectives, best[0].values)} {best[0].params}")
            print(f"best configuration: {path}\n  run it: labline train experiment={path.stem}")
        print(f"plots: {sweep_dir / 'plots'}; dashboard: optuna-dashboard {_public_url(plan.storage)}")
        return summary

    def _write_best(self, plan: Plan, trial: FrozenTrial) -> Path:
        loader = self.hydra_context.config_loader
        trial_cfg = loader.load_sweep_config(self.config, list(trial.user_attrs["overrides"]))
        choices = best_file.group_choices(trial_cfg)
        base_cfg = compose_config([f"{g}={o}" for g, o in choices.items()])
        name = best_file.experiment_name(plan.study_name, _public_url(plan.storage))
        header = [f"Best trial {trial.number} of Optuna study '{plan.study_name}' ({_values(plan.objectives, trial.values)}), "
                  "written by labline's sweeper.",
                  f"Run it: labline train experiment={name}"]
        text = best_file.experiment_yaml(name, header, trial_cfg, base_cfg)
        directory = Path(self.settings.best_config_dir) if self.settings.best_config_dir else config_dir() / "experiment"
        return best_file.write_experiment(directory, name, text)


def _forwarded() -> dict[str, str]:
    """What an array task must see as this process does: the store, the project (submitit pickles the rest)."""
    from labline.core.paths import project_root

    keep = ("MLFLOW_TRACKING_URI", "LABLINE_MAX_THREADS", "LABLINE_CONFIG_DIR")
    return {"LABLINE_PROJECT_ROOT": str(project_root()), **{k: os.environ[k] for k in keep if k in os.environ}}


def _judge(result: Any, reason: str | None, active: ActiveTrial,
           objectives: list[str]) -> tuple[TrialState, list[float] | None, str | None]:
    if reason:
        return TrialState.FAIL, None, reason
    reporter = active.reporter
    if reporter is not None and reporter.pruned_epoch is not None:
        return TrialState.PRUNED, None, None
    measured = {**(reporter.measured if reporter else {}), **(result if isinstance(result, dict) else {})}
    values = []
    for name in objectives:
        value = measured.get(name)
        if name not in measured:
            return TrialState.FAIL, None, f"objective '{name}' is not among the job's results {sorted(measured)}"
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return TrialState.FAIL, None, f"objective '{name}' is {value!r}, not a finite number"
        values.append(float(value))
    return TrialState.COMPLETE, values, None


def _failure(exc: BaseException) -> str:
    """The reason a trial failed, in one line; a config error the job exited on is named itself."""
    if isinstance(exc, SystemExit) and isinstance(exc.__context__, ConfigError):
        exc = exc.__context__
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]


def _describe(trial: FrozenTrial, objectives: list[str]) -> str:
    """One line per trial: number, state, value (or why none), epochs trained, the sampled parameters."""
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    # a pruned trial's last report is its best value so far, at the epoch count it was stopped at
    reported = trial.intermediate_values.get(max(trial.intermediate_values, default=-1))
    if trial.state == TrialState.COMPLETE:
        outcome = _values(objectives, trial.values)
    elif trial.state == TrialState.PRUNED:
        outcome = "" if reported is None else f"{objectives[0]}={reported:.6g} so far"
    else:
        outcome = trial.user_attrs.get("fail_reason", "interrupted")
    epochs = trial.user_attrs.get("epochs", max(trial.intermediate_values, default=0))
    return f"trial {trial.number} {trial.state.name} {outcome} ({epochs} epoch{'' if epochs == 1 else 's'}) [{params}]"


def _values(objectives: list[str], values: list[float]) -> str:
    return ", ".join(f"{o}={v:.6g}" for o, v in zip(objectives, values, strict=True))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _spec(spec: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in spec.items())


def _public_url(url: str | None) -> str:
    """The storage as printed and logged: default filled in, journal path absolute, password hidden."""
    url = storage_location(url)
    if "://" in url and "@" in url:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url

