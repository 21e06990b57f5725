"""Starting a server in its own process group and stopping exactly that group.

Every lab service is started detached (``setsid``): ``labline lab up`` returns while they keep running,
and ``lab down`` (or a test fixture's teardown) stops each one by its recorded process group. Stopping the
group, not the process, matters: ``mlflow server`` spawns job-runner children that ignore SIGTERM.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from labline.core.errors import ConfigError


def spawn(command: Sequence[str], log: Path, env: dict[str, str] | None = None, user: str | None = None,
          cwd: Path | None = None) -> int:
    """Start ``command`` detached in a new session (its own process group), output to ``log``; returns its pid
    (= its process group id). ``user``: drop root to that account (PostgreSQL and munge refuse root)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                   user=user if user and os.geteuid() == 0 else None)
    return process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def stop_group(pgid: int, timeout: float = 15.0, first: int = signal.SIGTERM) -> None:
    """``first`` (SIGTERM) to the process group, SIGKILL to whatever is left after ``timeout`` seconds."""
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + (timeout if sig == first else 5)
        while time.monotonic() < deadline:
            if not alive(pgid) and not _group_alive(pgid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(ready: Callable[[], bool], what: str, log: Path, timeout: float, pid: int | None = None) -> None:
    """Poll ``ready`` until it holds; a dead server or the timeout is one line naming its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if pid is not None and not alive(pid):
            raise ConfigError(what, f"exited while starting: {tail(log)}", f"see {log}")
        time.sleep(0.3)
    raise ConfigError(what, f"not ready after {timeout:.0f} s: {tail(log)}", f"see {log}")


def tail(log: Path, chars: int = 300) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return " ".join(text[-chars:].split())


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback URLs the lab built
            return response.status == 200
    except OSError:
        return False


def reachable(folder: Path) -> Path:
    """``folder``, or when root's folder is hidden from other accounts (pytest's temporary folders are 0700) a
    stand-in under /tmp named after it, for the servers that run as ``postgres`` or ``munge``."""
    folder = folder.resolve()
    if os.geteuid() != 0 or all(p.stat().st_mode & 0o001 for p in folder.parents if p.exists()):
        return folder
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    stand_in = Path(tempfile.gettempdir()) / f"labline-lab-{digest}" / folder.name
    stand_in.mkdir(parents=True, exist_ok=True)
    stand_in.parent.chmod(0o755)
    return stand_in


def own(path: Path, user: str) -> None:
    """Make ``path`` (recursively) belong to ``user`` when running as root, so a dropped-privilege server can write."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    for item in [path, *path.rglob("*")]:
        os.chown(item, entry.pw_uid, entry.pw_gid)
