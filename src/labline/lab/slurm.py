"""A single-node SLURM cluster on 127.0.0.1 (Debian's ``slurm-wlm`` and ``munge``): one controller, one node.

``munged`` runs as the ``munge`` account with its own key and socket in the lab folder; ``slurmctld -D`` and
``slurmd -D`` run in the foreground, each in its own process group, from a ``slurm.conf`` written here
(process tracking by /proc, no task plugin, no accounting: it works as root without systemd or cgroups).
Clients find it through ``SLURM_CONF``. The node offers this machine's cores, so array tasks share them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from labline.core.errors import ConfigError
from labline.lab.process import own, port_open, reachable, spawn, stop_group, wait_until

MUNGE_USER = "munge"
INSTALL_HINT = "apt-get install slurm-wlm munge (as root), or `make lab-install`"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch")


def _program(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)
    if found is None:
        raise ConfigError("slurm", f"`{name}` not found", INSTALL_HINT)
    return found


def available() -> bool:
    """SLURM needs root here (slurmd starts jobs as their users; munged runs as ``munge``)."""
    return os.geteuid() == 0 and all(shutil.which(p) or Path(f"/usr/sbin/{p}").exists() for p in PROGRAMS)


def slurm_conf(folder: Path, ctld_port: int, slurmd_port: int, munge_socket: Path) -> str:
    cpus = len(os.sched_getaffinity(0))
    return "\n".join([
        "ClusterName=labline",
        f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire also holds a requeued job that long before it may start again (default 120 s): a preempted
        # sweep worker on this one-node lab resumes after 20 s instead of two minutes.
        f"AuthInfo=socket={munge_socket},cred_expire=20",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "MpiDefault=none",
        "ReturnToService=2",
        "JobRequeue=1",
        "SchedulerParameters=sched_interval=1",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "MinJobAge=300",
        "KillWait=10",
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def start(folder: Path, ctld_port: int, slurmd_port: int) -> dict[str, int]:
    """munged, slurmctld and slurmd; returns their pids. ``SLURM_CONF`` must then point at ``folder/slurm.conf``."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(exist_ok=True)
    munge = reachable(folder / "munge")
    key, sock = munge / "munge.key", munge / "munge.socket"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    own(munge, MUNGE_USER)
    munge.chmod(0o711)
    pids = {"munged": spawn([_program("munged"), "--foreground", f"--key-file={key}", f"--socket={sock}",
                             f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                             f"--seed-file={munge / 'munged.seed'}", "--force"], munge / "munged.out", user=MUNGE_USER)}
    wait_until(sock.exists, "munged", munge / "munged.out", 30, pids["munged"])
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, ctld_port, slurmd_port, sock))
    env = {"SLURM_CONF": str(conf)}
    pids["slurmctld"] = spawn([_program("slurmctld"), "-D", "-i", "-f", str(conf)], folder / "slurmctld.out", env=env)
    wait_until(lambda: port_open(ctld_port), f"slurmctld on port {ctld_port}", folder / "slurmctld.out", 60,
               pids["slurmctld"])
    pids["slurmd"] = spawn([_program("slurmd"), "-D", "-N", "localhost", "-f", str(conf)], folder / "slurmd.out", env=env)
    wait_until(lambda: _node_idle(conf), "slurmd (node localhost idle)", folder / "slurmd.out", 60, pids["slurmd"])
    return pids


def _node_idle(conf: Path) -> bool:
    result = subprocess.run([_program("sinfo"), "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                            env={**os.environ, "SLURM_CONF": str(conf)}, timeout=30)
    return result.returncode == 0 and result.stdout.strip().rstrip("*") in ("idle", "mix", "alloc")


def stop(pids: dict[str, int], conf: Path | None = None) -> None:
    """Jobs first (so no orphan job process outlives the cluster), then the daemons."""
    if conf is not None and conf.exists() and "slurmctld" in pids:
        subprocess.run([_program("scancel"), "--full", "-u", "root"], env={**os.environ, "SLURM_CONF": str(conf)},
                       capture_output=True, timeout=30)
        time.sleep(1)
    for name in ("slurmd", "slurmctld", "munged"):
        if name in pids:
            stop_group(pids[name])
