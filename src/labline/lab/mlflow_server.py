"""A real ``mlflow server`` on 127.0.0.1: PostgreSQL backend store, proxied artifact store in a folder.

With ``--artifacts-destination`` the server stores artifacts itself and clients upload them over HTTP
(``mlflow-artifacts:/`` locations), so nothing of a run stays on the machine that ran it. ``--workers 1``
suits the 2-core machines; the first request after start can take about 30 s, hence the long poll of
``/health``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from labline.lab.process import http_ok, spawn, stop_group, wait_until


def uri(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def start(folder: Path, port: int, backend_uri: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "mlflow-server.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    pid = spawn([str(mlflow), "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
                 str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], log,
                env={"MLFLOW_TRACKING_URI": ""})
    wait_until(lambda: http_ok(f"{uri(port)}/health"), f"mlflow server on 127.0.0.1:{port}", log, 120, pid)
    return pid


def stop(pid: int) -> None:
    stop_group(pid)
