"""Study workers as a SLURM job array, through submitit (the library Hydra's submitit launcher uses).

A sweep or an ablation submits N array tasks; each task runs labline in-process (a sweep worker asks the
study for trials itself, so pruning works as on one machine). The launching command watches the array,
prints progress and concludes, or returns at once (``wait: false``) and a later command concludes.

Preemption and time limits: SLURM sends the pre-timeout signal (``USR2``, ``signal_delay_s`` before the
limit; ``scancel --signal=USR2`` or a preempting scheduler sends the same). The task turns it into labline's
``Interrupted``, so the training in flight keeps a resumable checkpoint and its MLflow run is marked KILLED
with its in-flight record kept; then submitit's own handler requeues the task (``scontrol requeue``) and the
requeued task runs the same work again, which resumes from that checkpoint into the same MLflow run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import Any

from labline.core.errors import ConfigError
from labline.core.interrupts import Interrupted

PREEMPT_SIGNAL = signal.SIGUSR2
# Set by the work in flight when it was preempted (a sweep trial's number): the requeued task continues it.
RESUME_ENV = "LABLINE_CLUSTER_RESUME"


@dataclass
class SlurmSettings:
    """``hydra.sweeper.slurm`` and an ablation's ``slurm``: how each array task is submitted (docs/cluster.md)."""

    partition: str | None = None
    # wall-clock limit of one array task, minutes
    time_min: int = 60
    cpus_per_task: int = 1
    # tasks per node and nodes of each array task: with trainer=ddp trainer.devices=<tasks_per_node>
    # trainer.num_nodes=<nodes>, every training of the task runs over that many processes (srun starts them; the
    # task's rank zero is the worker, the other tasks train its trainings' other ranks: docs/distributed.md)
    tasks_per_node: int = 1
    nodes: int = 1
    # e.g. "4G"; null: the partition's default
    mem: str | None = None
    # generic resources, e.g. "gpu:1"
    gres: str | None = None
    # tasks of the array running at once; null: all
    array_parallelism: int | None = None
    # seconds before the time limit that SLURM sends the pre-timeout signal (checkpoint, requeue)
    signal_delay_s: int = 90
    # how many times a task may be requeued after a timeout or preemption
    max_requeues: int = 3
    # any other sbatch option: {account: lab, qos: high, constraint: a100}
    additional: dict[str, Any] = field(default_factory=dict)
    # shell lines run before each task (module load ..., source .venv/bin/activate)
    setup: list[str] = field(default_factory=list)
    # false: submit and return; the same command again watches the array and concludes
    wait: bool = True
    # also run one worker in the launching process while the array runs
    local_worker: bool = False
    # submitit's folder (job scripts, logs, pickles); null: <sweep or study dir>/slurm
    folder: str | None = None

    @classmethod
    def from_config(cls, values: dict[str, Any] | None, key: str) -> SlurmSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", "not a SLURM setting", sorted(known))
        settings = cls(**(values or {}))
        for name in ("time_min", "cpus_per_task", "signal_delay_s", "tasks_per_node", "nodes"):
            if not isinstance(getattr(settings, name), int) or getattr(settings, name) < 1:
                raise ConfigError(f"{key}.{name}", f"must be a positive integer, got {getattr(settings, name)!r}")
        return settings


def executor(settings: SlurmSettings, folder: Path, name: str) -> Any:
    """A submitit SLURM executor for ``settings``; refuses in one line when no SLURM is reachable."""
    import shutil

    import submitit

    if shutil.which("sbatch") is None:
        raise ConfigError("backend", "slurm, but `sbatch` is not on PATH here",
                          "a SLURM login node, `labline lab up slurm` to try it on this machine, or backend=local")
    folder.mkdir(parents=True, exist_ok=True)
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=settings.max_requeues)
    params: dict[str, Any] = {"job_name": name, "time": settings.time_min, "cpus_per_task": settings.cpus_per_task,
                              "ntasks_per_node": settings.tasks_per_node, "nodes": settings.nodes,
                              "signal_delay_s": settings.signal_delay_s, "additional_parameters": dict(settings.additional),
                              "setup": list(settings.setup)}
    for key in ("partition", "mem", "gres", "array_parallelism"):
        if getattr(settings, key) is not None:
            params[key] = getattr(settings, key)
    ex.update_parameters(**params)
    return ex


class Task:
    """One array task: ``entry`` (``module:function``, looked up in the task's process, like a console script:
    a sweep task runs the labline CLI itself) called with the task's arguments, in ``environment`` and ``cwd``.
    Requeued by submitit after a timeout or preemption (``checkpoint`` is submitit's Checkpointable protocol);
    what the preempted work left in ``RESUME_ENV`` reaches the requeued task."""

    def __init__(self, entry: str, environment: dict[str, str], cwd: str):
        self.entry, self.environment, self.cwd = entry, dict(environment), cwd

    def __call__(self, *args: Any) -> Any:
        import importlib

        from labline.runs.launched import run_as_rank

        os.environ.update(self.environment)
        os.chdir(self.cwd)
        requeue = signal.getsignal(PREEMPT_SIGNAL)  # submitit's: checkpoint(), scontrol requeue, exit
        preempted: list[int] = []

        def on_preempt(signum: int, frame: FrameType | None) -> None:
            signal.signal(signum, signal.SIG_IGN)
            preempted.append(signum)
            raise Interrupted(signum)

        signal.signal(PREEMPT_SIGNAL, on_preempt)
        module, name = self.entry.split(":")
        try:
            # a task of several (tasks_per_node > 1): rank zero does the work, the others train its trainings' ranks
            return run_as_rank(lambda: getattr(importlib.import_module(module), name)(*args))
        except BaseException:
            if not preempted or not callable(requeue):
                raise
        # The work has unwound (checkpoint kept, run KILLED): submitit checkpoints this task and requeues it.
        print("preempted: checkpoint kept, requeueing", flush=True)
        requeue(PREEMPT_SIGNAL, None)
        return None

    def checkpoint(self, *args: Any) -> Any:
        import submitit

        environment = dict(self.environment)
        if os.environ.get(RESUME_ENV):
            environment[RESUME_ENV] = os.environ[RESUME_ENV]
        return submitit.helpers.DelayedSubmission(Task(self.entry, environment, self.cwd), *args)


def submit_array(settings: SlurmSettings, folder: Path, name: str, entry: str,
                 tasks: Sequence[tuple[dict[str, str], Sequence[Any]]]) -> list[Any]:
    """One array task per ``(environment, arguments)``; returns submitit's jobs."""
    ex = executor(settings, folder, name)
    with ex.batch():
        jobs = [ex.submit(Task(entry, environment, os.getcwd()), *args) for environment, args in tasks]
    print(f"submitted SLURM array {jobs[0].job_id.split('_')[0]} ({len(jobs)} tasks; logs: {folder})", flush=True)
    return jobs


def active(job_ids: Sequence[str]) -> set[str]:
    """Which of the jobs SLURM still has queued, running or requeued (``squeue``; sacct needs accounting, which
    many clusters and the lab stack lack)."""
    import subprocess

    if not job_ids:
        return set()
    result = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:  # squeue refuses ids it no longer knows
        return set() if "Invalid job id" in result.stderr else set(job_ids)
    return set(result.stdout.split()) & set(job_ids)


def outcome(job: Any) -> str | None:
    """None if the task's work succeeded, else one line saying how it ended (from submitit's result file)."""
    from submitit.core.utils import pickle_load

    path = job.paths.result_pickle
    if not path.exists():
        return f"SLURM task {job.job_id} ended without a result; log: {job.paths.stderr}"
    status, value = pickle_load(path)
    if status == "success":
        return None
    last = str(value).strip().splitlines()[-1:] or ["?"]
    return f"SLURM task {job.job_id} failed: {last[0][:300]}; log: {job.paths.stderr}"


def watch(jobs: Sequence[Any], report: Callable[[], None], interval: float = 3.0) -> list[str]:
    """Until every job has left the queue: ``report()`` now and then; returns one line per task that did not succeed."""
    ids = [job.job_id for job in jobs]
    while True:
        report()
        if not active(ids):
            break
        time.sleep(interval)
    report()
    return [line for line in (outcome(job) for job in jobs) if line]
