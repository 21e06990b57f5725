"""A throwaway PostgreSQL cluster on 127.0.0.1: the database behind the MLflow server and the Optuna studies.

``initdb`` refuses to run as root, so as root the cluster belongs to Debian's ``postgres`` account. The
postmaster is started directly (not through ``pg_ctl``, which daemonises it away from the process group
labline records), trusting loopback connections: it is for trying the lab stack and for tests, never exposed.
(pytest-postgresql starts ``pg_ctl`` as the current user, i.e. root in CI, which initdb refuses; and the
same code must serve ``labline lab up`` outside pytest, so labline starts the cluster itself.)
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path

from labline.core.errors import ConfigError
from labline.lab.process import own, port_open, reachable, spawn, stop_group, wait_until

USER = "postgres"
DATABASES = ("mlflow", "optuna")
INSTALL_HINT = "apt-get install postgresql (as root), or `make lab-install`"


def binary(name: str) -> str:
    """Debian keeps the server programs in /usr/lib/postgresql/<version>/bin, off PATH."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise ConfigError("postgresql", f"`{name}` not found", INSTALL_HINT)
    return found


def available() -> bool:
    try:
        binary("initdb")
        binary("postgres")
    except ConfigError:
        return False
    return True


def url(port: int, database: str) -> str:
    """SQLAlchemy URL with the psycopg 3 driver named (SQLAlchemy 2.1 maps plain ``postgresql://`` to it too)."""
    return f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{database}"


def start(folder: Path, port: int) -> int:
    """Create (first time) and start the cluster in ``folder``; returns the postmaster's pid."""
    folder.mkdir(parents=True, exist_ok=True)
    folder = reachable(folder)
    data, log = folder / "data", folder / "postgres.log"
    user = USER if os.geteuid() == 0 else None
    if user:
        own(folder, user)
    if not (data / "PG_VERSION").exists():
        subprocess.run([binary("initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"], check=True,
                       capture_output=True, user=user)
    pid = spawn([binary("postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1", "-p", str(port),
                 "-k", str(folder), "-c", "max_connections=200", "-c", "fsync=off"], log, user=user)
    wait_until(lambda: port_open(port) and _accepts(port), f"postgresql on 127.0.0.1:{port}", log, 60, pid)
    for database in DATABASES:
        _create_database(port, database)
    return pid


def _accepts(port: int) -> bool:
    import psycopg

    try:
        psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def _create_database(port: int, database: str) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')


def stop(pid: int) -> None:
    """SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave)."""
    stop_group(pid, timeout=20, first=signal.SIGINT)
