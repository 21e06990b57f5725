"""``labline lab up [SERVICE ...]`` / ``labline lab down`` / ``labline lab env``: the stack of docs/cluster.md on one machine."""

from __future__ import annotations

from pathlib import Path

from labline.core.errors import ConfigError
from labline.lab.stack import SERVICES, Lab, Ports, available, exports


def lab(action: str, services: list[str], folder: Path, port_offset: int = 0) -> None:
    current = Lab.load(folder)
    if action == "up":
        if current.pids:
            raise ConfigError("lab", f"already running from {folder} ({', '.join(current.pids)})", "`labline lab down` first")
        wanted = tuple(services) or tuple(s for s, ok in available().items() if ok)
        missing = [s for s in wanted if s in SERVICES and not available()[s]]
        if missing:
            raise ConfigError("lab services", f"{', '.join(missing)} cannot run here (not installed, or not root)",
                              "`make lab-install` as root, or leave them out")
        current = Lab(folder, Ports().shifted(port_offset))
        current.start(wanted)
        print(f"lab running: {', '.join(current.pids)} (state in {folder}); stop it with `labline lab down`")
        print(exports(current))
    elif action == "down":
        running = ", ".join(current.pids) or "nothing"
        current.stop()
        print(f"lab stopped ({running})")
    else:
        print(exports(current) if current.pids else "lab not running: `labline lab up`")
