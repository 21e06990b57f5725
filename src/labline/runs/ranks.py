"""One training over several processes (Lightning DDP): rank zero is the run, the other ranks only train.

Lightning's ``ddp`` strategy starts the other ranks from inside ``trainer.fit`` by re-running the script in
``sys.argv`` (``ddp_spawn`` would instead pickle the task, the datamodule and the callbacks into fresh processes
and hand back only the weights, losing what the callbacks learnt: the curves, the guard's counts). labline
keeps rank zero in the user's process, where the MLflow run, the curves, the resume record and the checkpoints
live, and points Lightning's launcher at ``labline/ranks.py``. What a rank must train exactly as rank zero does
travels in ``LABLINE_RANK_PLAN``: the resolved config, the output folder, the project root and the checkpoint
to resume from. So a rank needs no Hydra, no command line and no MLflow: it trains and exits, whatever started
rank zero (``labline train``, a DVC stage, a sweep or an ablation). When a launcher (srun, torchrun) started every
rank, the same plan reaches the other ranks through ``labline.runs.launched`` instead of the environment.

Stopping: a stop every rank agrees on (the non-finite guard's, whose decision is reduced over the ranks, or a
Ctrl-C the terminal sends to all of them) is reported by rank zero alone, which ends the other ranks and records
the run FAILED or KILLED; a rank that stopped waits for that (Lightning's launcher kills rank zero as soon
as a rank exits with an error, before it could record why). A rank whose rank zero died (SIGKILL) ends itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from labline.callbacks.guards import NonFiniteError
from labline.core.interrupts import Interrupted, graceful_signals
from labline.runs.launched import AGENT_STORE_ENV, ENTRY, EXIT_WAIT_SECONDS, PLAN_ENV, channel

# How long a stopped rank waits for rank zero to end it.
STOP_GRACE_SECONDS = 60.0
# What Lightning's launcher exports in rank zero's process; left set, the next training in this process (a sweep's
# next trial, the single-device test) would believe its ranks were started from outside.
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", PLAN_ENV, AGENT_STORE_ENV)


def topology_tags(trainer: pl.Trainer) -> dict[str, Any]:
    """What the run records about the processes that train it."""
    return {"distributed.world_size": trainer.world_size, "distributed.strategy": type(trainer.strategy).__name__,
            "distributed.devices": trainer.num_devices, "distributed.num_nodes": trainer.num_nodes,
            "distributed.accelerator": type(trainer.accelerator).__name__}


def own_signals(trainer: pl.Trainer) -> None:
    """Keep labline's SIGINT/SIGTERM handling (``graceful_signals``) in charge of a distributed training. Lightning's
    own SIGTERM handler broadcasts from inside the handler; a signal landing during backward, with bucket
    all-reduces half launched, then waits for ever on a peer that waits for the rest of them (seen with gloo).
    labline's handler only raises in this process; rank zero then ends the other ranks."""
    trainer._signal_connector.register_signal_handlers = lambda: None  # Lightning 2.x, private but stable


@contextmanager
def launching_ranks(trainer: pl.Trainer, config: dict[str, Any], out_dir: Path, root: Path,
                    checkpoint: Path | None) -> Iterator[None]:
    """Around rank zero's ``trainer.fit``: the other ranks run ``labline/ranks.py`` with this plan, started by
    Lightning's launcher or, when a launcher (srun, torchrun) started every rank, by the agents of
    ``labline.runs.launched``; when the block ends they are waited for (or, if it raised, ended) and the process
    group is closed, so that rank zero can go on alone (testing, predictions)."""
    if trainer.world_size <= 1:
        yield
        return
    own_signals(trainer)
    plan = {"config": config, "out_dir": str(out_dir.resolve()), "root": str(root.resolve()),
            "checkpoint": str(checkpoint) if checkpoint else None, "parent": os.getpid()}
    environment = {k: os.environ.get(k) for k in LAUNCH_ENV}
    chan = channel()
    ok = False
    try:
        if chan is not None:
            # A fresh port for this training's process group: the launcher's rendezvous port carries the channel.
            from lightning.fabric.plugins.environments.lightning import find_free_network_port

            plan["port"] = find_free_network_port()
            os.environ.update(MASTER_PORT=str(plan["port"]), **{AGENT_STORE_ENV: "False"})
            chan.publish(plan)
            yield
        else:
            with _launcher_runs_entry(plan):
                yield
        ok = True
    finally:
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if chan is not None:
            chan.ended(ok)
        end_ranks(trainer, ok)


@contextmanager
def _launcher_runs_entry(plan: dict[str, Any]) -> Iterator[None]:
    """Lightning's launcher runs ``python -m <__main__'s module>`` when it has one, else ``python <sys.argv[0]>
    <sys.argv[1:]>``: for the block, that is ``labline/ranks.py`` with the plan in its environment."""
    import __main__

    argv, spec = list(sys.argv), getattr(__main__, "__spec__", None)
    os.environ[PLAN_ENV] = json.dumps(plan)
    sys.argv[0], __main__.__spec__ = str(ENTRY), None
    try:
        yield
    finally:
        sys.argv[:] = argv
        __main__.__spec__ = spec


def end_ranks(trainer: pl.Trainer, ok: bool) -> None:
    """Wait for the ranks this process started (``ok``) or end them, then close the process group. In that order:
    closing a gloo group waits for its pending collectives, which a stopped peer would never complete, while a
    collective whose peer is gone fails at once."""
    started = getattr(trainer.strategy.launcher, "procs", None) or []
    procs = list(started)
    # Lightning's launcher watches this same list and SIGKILLs rank zero when a rank exits with an error: emptied,
    # the ranks ended here do not take rank zero down before it records the run's end.
    started.clear()
    for proc in procs:
        if ok:
            try:
                proc.wait(timeout=EXIT_WAIT_SECONDS)
                continue
            except subprocess.TimeoutExpired:  # a rank that does not exit is ended below
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # a rank blocked in a collective never reaches a Python handler
        proc.wait()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def rank_plan() -> dict[str, Any] | None:
    """The plan rank zero handed this process, when it is one of the other ranks of a training: started by
    Lightning's launcher (``LOCAL_RANK`` > 0) or by a launched rank's agent (the plan names the rank)."""
    raw = os.environ.get(PLAN_ENV)
    plan = json.loads(raw) if raw else None
    return plan if plan and (plan.get("rank") or os.environ.get("LOCAL_RANK", "0") != "0") else None


def _watch_parent(parent: int) -> None:
    """End this rank when rank zero is gone (SIGKILL): it would otherwise wait in a collective for ever."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="labline-rank-zero-watch").start()


def follow(plan: dict[str, Any]) -> None:
    """Train as one of the other ranks: the same config, folder and checkpoint as rank zero, nothing recorded."""
    from labline.runs.assembly import prepare_run

    _watch_parent(int(plan["parent"]))
    cfg = OmegaConf.create(plan["config"])
    run = prepare_run(cfg, Path(plan["out_dir"]), Path(plan["root"]))
    own_signals(run.trainer)
    with graceful_signals():
        try:
            run.trainer.fit(run.task, datamodule=run.datamodule, ckpt_path=plan["checkpoint"], weights_only=True)
        except (NonFiniteError, Interrupted):
            time.sleep(STOP_GRACE_SECONDS)  # rank zero records the stop, then ends this process
            raise
