"""Ranks that a launcher started (SLURM's ``srun``, ``torchrun``): every rank runs the same command, rank zero alone
is the run.

Under ``srun --ntasks-per-node=M labline train trainer=ddp trainer.devices=M trainer.num_nodes=N`` every task runs
``labline train``. Lightning sees the launcher (its own detection: torchelastic first, then SLURM) and starts no
ranks itself; labline must still keep one MLflow run, one output folder and one resume record. So only global rank
zero runs the command (Hydra, the checks, the MLflow run, the sweep or ablation around the training); every other
rank becomes an agent that waits for rank zero's trainings. For each one rank zero publishes the same plan that
Lightning-launched ranks get (``labline.runs.ranks``: resolved config, output folder, checkpoint to resume from) on
a TCP store at the launcher's rendezvous point (``MASTER_ADDR:MASTER_PORT``, which Lightning derives from the SLURM
job; torchrun's own agent store), plus a fresh port for that training's process group. The agent runs the plan in
a child process (``labline/ranks.py``) and ends it when rank zero says the training ended, well or not: a pruned
trial or a failed one leaves the agent ready for the next trial of a sweep, with no peer stuck in a collective.
When the command ends rank zero says so and the agents exit 0: the launcher's exit code is rank zero's, and
errors are printed once, by rank zero. An agent whose rank zero vanished (SIGKILL) ends its child and exits 1.

Inside an allocation of one task (a sweep's array task, ``sbatch -c 4 labline train trainer=ddp``) Lightning would
still pick its SLURM environment, with a world of one, and silently train in one process: there labline hands
Lightning its plain environment, so Lightning's own launcher starts the ranks on the node (``trainer_plugins``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

import labline
from labline.core.errors import ConfigError

T = TypeVar("T")
# The other ranks of a training run this file with rank zero's plan in this variable (labline.runs.ranks).
PLAN_ENV = "LABLINE_RANK_PLAN"
ENTRY = Path(labline.__file__).resolve().parent / "ranks.py"
# How long rank zero (or an agent) waits for a rank whose training ended well to exit before it is ended.
EXIT_WAIT_SECONDS = 60.0
PREFIX = "labline/"
# How long an agent may wait to reach rank zero's store, and rank zero for every agent to hear that the command ended.
CONNECT_SECONDS = 600
GOODBYE_SECONDS = 60.0
POLL_SECONDS = 0.5
# What a training's ranks must not inherit from the launcher: torchrun's agent store is for its own rendezvous.
AGENT_STORE_ENV = "TORCHELASTIC_USE_AGENT_STORE"


@dataclass(frozen=True)
class Place:
    """Where this process stands in a world a launcher started."""

    rank: int
    world_size: int
    address: str
    port: int
    launcher: str
    # srun or torchrun; torchrun's agent already serves a store at address:port, every rank is a client of it
    agent_store: bool


def _environment() -> Any:
    """Lightning's cluster environment for this process when a launcher started it (None: no launcher). The same
    choice Lightning's Trainer makes (torchelastic has priority: it may run inside SLURM)."""
    if not (os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("SLURM_NTASKS")):
        return None  # no launcher: skip importing Lightning
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for kind in (TorchElasticEnvironment, SLURMEnvironment):
        if kind.detect():
            try:
                return kind()
            except RuntimeError as err:  # SLURM: --ntasks without --ntasks-per-node
                if os.environ.get("SLURM_PROCID", "0") != "0":
                    raise SystemExit(2) from None  # said once, by task 0
                raise ConfigError("SLURM_NTASKS", " ".join(str(err).split()), "sbatch/srun --ntasks-per-node=M "
                                  "(M = trainer.devices) and --nodes=N (N = trainer.num_nodes)") from None
    return None


def place() -> Place | None:
    """This process's rank when a launcher started several ranks, else None (one process, or ranks that Lightning's
    own launcher starts)."""
    tasks = os.environ.get("WORLD_SIZE" if os.environ.get("TORCHELASTIC_RUN_ID") else "SLURM_NTASKS", "1")
    if not tasks.isdigit() or int(tasks) <= 1:
        return None  # one task: no agents, and no Lightning import for commands that never train
    env = _environment()
    if env is None or env.world_size() <= 1:
        return None
    if type(env).__name__ == "SLURMEnvironment" and not os.environ.get("SLURM_STEP_ID"):
        raise ConfigError("SLURM_NTASKS", f"{env.world_size()} tasks, but this is the batch script, not a task srun "
                          "started: the other ranks would never come", "srun labline train ... inside the job script")
    launcher = "torchrun" if type(env).__name__ == "TorchElasticEnvironment" else "srun"
    return Place(env.global_rank(), env.world_size(), env.main_address, env.main_port, launcher,
                 os.environ.get(AGENT_STORE_ENV, "").lower() in ("1", "true"))


def check_world(cfg: DictConfig) -> None:
    """The trainer's ranks (``trainer.devices`` x ``trainer.num_nodes``) against what the launcher started, before any
    run exists (Lightning checks it only once training starts); several machines need a launcher."""
    found = place()
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    if found is None:
        if isinstance(nodes, int) and nodes > 1:
            raise ConfigError("trainer.num_nodes", f"{nodes} machines, but no launcher started this process: each "
                              "machine's ranks must be started there", "srun (SLURM) or torchrun on every node; "
                              "1 for one machine")
        return
    count = len(devices) if isinstance(devices, list | tuple) or OmegaConf.is_list(devices) else devices
    if not (isinstance(count, int) and isinstance(nodes, int) and count * nodes == found.world_size):
        raise ConfigError("trainer.devices", f"{devices!r} x trainer.num_nodes {nodes!r} ranks, but {found.launcher} "
                          f"started {found.world_size}", "devices = tasks per node and num_nodes = nodes of the job")


def trainer_plugins(cfg: DictConfig) -> dict[str, Any]:
    """Trainer arguments for where this process runs: inside a one-task allocation, several devices per node are
    started by Lightning's own launcher (its plain environment), not expected from SLURM."""
    from labline.runs.runtime import ranks_per_node

    env = _environment()
    if env is None or env.world_size() > 1 or ranks_per_node(cfg) <= 1 or "plugins" in cfg.trainer:
        return {}
    from lightning.fabric.plugins.environments import LightningEnvironment

    return {"plugins": [LightningEnvironment()]}


class Channel:
    """Rank zero's word to the other ranks: ``plan/N`` (the N-th training, or the command's end), ``end/N`` (how
    training N ended: ok or abort), ``bye`` (agents that heard the command end)."""

    def __init__(self, where: Place):
        from torch.distributed import PrefixStore, TCPStore

        serve = where.rank == 0 and not where.agent_store
        store = TCPStore(where.address, where.port, None, serve, timedelta(seconds=CONNECT_SECONDS),
                         wait_for_workers=False)
        # torchrun's agent store outlives a restart of the workers (--max-restarts): each attempt has its own keys
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.place, self.store, self.trainings = where, PrefixStore(f"{PREFIX}{attempt}/", store), 0

    # -- rank zero -------------------------------------------------------------------------------------------------

    def publish(self, plan: dict[str, Any]) -> None:
        self.store.set(f"plan/{self.trainings}", json.dumps(plan))

    def ended(self, ok: bool) -> None:
        self.store.set(f"end/{self.trainings}", "ok" if ok else "abort")
        self.trainings += 1

    def close(self) -> None:
        """Tell the agents the command is over and wait until each heard it (closing the store sooner would look to
        them as if rank zero had died)."""
        self.store.set(f"plan/{self.trainings}", json.dumps({"exit": True}))
        deadline = time.monotonic() + GOODBYE_SECONDS
        while self.store.add("bye", 0) < self.place.world_size - 1 and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS / 5)

    # -- the other ranks -------------------------------------------------------------------------------------------

    def value(self, key: str) -> str | None:
        """The key's value once rank zero set it (None: not yet); raises when rank zero is gone."""
        return self.store.get(key).decode() if self.store.check([key]) else None

    def next_plan(self) -> dict[str, Any]:
        while (raw := self.value(f"plan/{self.trainings}")) is None:
            time.sleep(POLL_SECONDS)
        return json.loads(raw)


_channel: Channel | None = None


def channel() -> Channel | None:
    """Rank zero's channel while a launched command runs (None: no launcher, or one rank)."""
    return _channel


def run_as_rank(work: Callable[[], T]) -> T | None:
    """Run a command (``work``) in a process a launcher may have started as one of several ranks: rank zero runs it,
    publishing each of its trainings; the other ranks follow those and return None when rank zero's command ends."""
    global _channel
    where = None if _channel is not None else place()  # a command inside a launched one (a SLURM task's CLI)
    if where is None:
        return work()
    if where.rank != 0:
        code = follow_trainings(Channel(where))
        if code:
            raise SystemExit(code)
        return None
    _channel = Channel(where)
    try:
        return work()
    finally:
        _channel.close()
        _channel = None


def _end(child: subprocess.Popen, wait: float) -> None:
    try:
        child.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)  # blocked in a collective: no Python handler runs
        child.wait()


def follow_trainings(chan: Channel) -> int:
    """An agent: each training rank zero publishes, run in a child process until it ends or rank zero says it ended;
    returns the exit code (0 when rank zero's command ended, 1 when rank zero vanished)."""
    # A signal reaching every task (Ctrl-C on srun, scancel) is rank zero's to record; the child stops on its own.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    child: subprocess.Popen | None = None
    try:
        while True:
            plan = chan.next_plan()
            if plan.get("exit"):
                chan.store.add("bye", 1)
                return 0
            plan.update(parent=os.getpid(), rank=chan.place.rank)
            env = {**os.environ, PLAN_ENV: json.dumps(plan), "MASTER_ADDR": chan.place.address,
                   "MASTER_PORT": str(plan["port"]), AGENT_STORE_ENV: "False"}
            child = subprocess.Popen([sys.executable, str(ENTRY)], env=env, preexec_fn=_default_signals)
            key = f"end/{chan.trainings}"
            while (outcome := chan.value(key)) is None:
                time.sleep(POLL_SECONDS)
            _end(child, EXIT_WAIT_SECONDS if outcome == "ok" else 0)
            child, chan.trainings = None, chan.trainings + 1
    except Exception:  # the store is gone: rank zero died
        if child is not None:
            _end(child, 0)
        return 1


def _default_signals() -> None:
    """The child handles SIGINT/SIGTERM itself (labline's graceful stop), not as its ignoring parent does."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
