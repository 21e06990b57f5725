"""What a run needs to be repeated: code version, data hashes, package versions, and the CPU it ran on."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

# What labline itself writes into the tracked tree (a sweep's best configuration, an ablation's tables): a run is
# not "dirty" because an earlier labline command wrote them.
OWN_OUTPUTS = ("conf/experiment/*_best.yaml", "reports/ablation")
PACKAGES = ("labline", "torch", "lightning", "hydra-core", "mlflow", "dvc", "optuna", "scikit-learn", "torchmetrics", "numpy")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(root: Path) -> dict[str, str]:
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "none", "git_dirty": "unknown"}
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                 *(f":(exclude,glob){path}" for path in OWN_OUTPUTS))
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> dict[str, str]:
    """The CPU a number was measured on: its model and the kernels torch dispatches to on it (``AVX512``, ``AVX2``,
    ...). With the same code, data, seed and one thread, two runs on one machine agree to the last digit; on a CPU
    with other kernels the float sums round differently and a training can end a few test samples apart (measured:
    docs/reliability.md), so a result records where it came from."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
