"""The whole lab stack on one machine: PostgreSQL, an MLflow server on it, SLURM and an S3 store.

``labline lab up`` starts what is installed, records every server's pid and port in ``<folder>/lab.json``
and prints the variables to export; ``labline lab down`` stops each recorded process group. The cluster
tests start the same stack through ``up`` (with ports of their own per pytest-xdist worker) and stop it
through ``down``, so what a user tries on a laptop is what CI tests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labline.core.errors import ConfigError
from labline.lab import mlflow_server, postgres, s3, slurm

SERVICES = ("postgres", "mlflow", "slurm", "s3")
STATE = "lab.json"


@dataclass(frozen=True)
class Ports:
    """Every port the stack listens on, all on 127.0.0.1; ``offset`` moves them all (one stack per test worker)."""

    postgres: int = 15432
    mlflow: int = 15000
    slurmctld: int = 16817
    slurmd: int = 16818
    s3_base: int = 18330

    def shifted(self, offset: int) -> Ports:
        return Ports(**{k: v + offset for k, v in asdict(self).items()})


@dataclass
class Lab:
    folder: Path
    ports: Ports
    pids: dict[str, dict[str, int]] = field(default_factory=dict)

    # -- what a client needs ------------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        return mlflow_server.uri(self.ports.mlflow)

    def database_url(self, database: str = "optuna") -> str:
        return postgres.url(self.ports.postgres, database)

    @property
    def slurm_conf(self) -> Path:
        return self.folder / "slurm" / "slurm.conf"

    @property
    def s3_endpoint(self) -> str:
        return s3.endpoint(s3.ports(self.ports.s3_base)["s3"])

    def environment(self) -> dict[str, str]:
        """The variables a client exports to use the running services."""
        env: dict[str, str] = {}
        if "mlflow" in self.pids:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        if "postgres" in self.pids:
            env["LABLINE_LAB_OPTUNA_STORAGE"] = self.database_url("optuna")
        if "slurm" in self.pids:
            env["SLURM_CONF"] = str(self.slurm_conf)
        if "s3" in self.pids:
            env.update(s3.CREDENTIALS)
            env["LABLINE_LAB_S3_ENDPOINT"] = self.s3_endpoint
        return env

    # -- starting and stopping ------------------------------------------------------------------------

    def start(self, services: tuple[str, ...] = SERVICES) -> None:
        """Start ``services`` not running yet (mlflow brings postgres); stops everything if one fails."""
        unknown = sorted(set(services) - set(SERVICES))
        if unknown:
            raise ConfigError("lab services", f"unknown service {unknown[0]!r}", SERVICES)
        wanted = (set(services) | ({"postgres"} if "mlflow" in services else set())) - set(self.pids)
        try:
            if "postgres" in wanted:
                self.pids["postgres"] = {"postgres": postgres.start(self.folder / "postgres", self.ports.postgres)}
                self.save()
            if "mlflow" in wanted:
                pid = mlflow_server.start(self.folder / "mlflow", self.ports.mlflow, self.database_url("mlflow"))
                self.pids["mlflow"] = {"mlflow": pid}
                self.save()
            if "slurm" in wanted:
                self.pids["slurm"] = slurm.start(self.folder / "slurm", self.ports.slurmctld, self.ports.slurmd)
                self.save()
            if "s3" in wanted:
                self.pids["s3"] = {"weed": s3.start(self.folder / "s3", self.ports.s3_base)}
                self.save()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every recorded service, clients' servers first."""
        if "slurm" in self.pids:
            slurm.stop(self.pids.pop("slurm"), self.slurm_conf)
        if "s3" in self.pids:
            s3.stop(self.pids.pop("s3")["weed"])
        if "mlflow" in self.pids:
            mlflow_server.stop(self.pids.pop("mlflow")["mlflow"])
        if "postgres" in self.pids:
            postgres.stop(self.pids.pop("postgres")["postgres"])
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / STATE).write_text(json.dumps({"ports": asdict(self.ports), "pids": self.pids}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Lab:
        path = folder / STATE
        if not path.exists():
            return cls(folder, Ports())
        state = json.loads(path.read_text())
        return cls(folder, Ports(**state["ports"]), state["pids"])


def available() -> dict[str, bool]:
    """Which services this machine can run (installed, and root where a service needs it)."""
    return {"postgres": postgres.available(), "mlflow": postgres.available(), "slurm": slurm.available(), "s3": True}


def exports(lab: Lab) -> str:
    """Shell lines to paste, and how each service is used."""
    env = lab.environment()
    lines = [f"export {k}={v}" for k, v in env.items()]
    if "LABLINE_LAB_OPTUNA_STORAGE" in env:
        storage = env["LABLINE_LAB_OPTUNA_STORAGE"]
        lines.append(f"# studies: labline train -m hparams_search=digits_cnn hydra.sweeper.storage={storage}")
    if "SLURM_CONF" in env:
        lines.append("# SLURM:   ... hydra.sweeper.backend=slurm hydra.sweeper.n_jobs=2 (sinfo, squeue work as on a cluster)")
    if "LABLINE_LAB_S3_ENDPOINT" in env:
        lines.append(f"# DVC:     dvc remote add -d lab s3://{s3.BUCKET}/dvc && dvc remote modify lab endpointurl "
                     f"{env['LABLINE_LAB_S3_ENDPOINT']}")
    return "\n".join(lines)
