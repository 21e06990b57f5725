"""A run's git state: ``git_dirty`` says the user changed tracked files, not that labline wrote its own outputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from labline.tracking.provenance import git_state, machine

GIT = ["git", "-c", "user.name=labline-tests", "-c", "user.email=tests@labline.invalid"]


def _repo(root: Path) -> Path:
    for rel in ("reports/ablation/tiny/table.md", "conf/experiment/digits_cnn_optuna_best.yaml", "conf/train.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("committed\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "init"], cwd=root, check=True)
    return root


def test_labline_outputs_do_not_make_the_tree_dirty(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "reports/ablation/tiny/table.md").write_text("rewritten by labline ablate\n")
    (root / "conf/experiment/digits_cnn_optuna_best.yaml").write_text("rewritten by a sweep\n")
    assert git_state(root)["git_dirty"] == "false"
    (root / "conf/train.yaml").write_text("edited by the user\n")
    assert git_state(root)["git_dirty"] == "true"


def test_the_machine_names_the_cpu_and_the_kernels_torch_dispatches_to() -> None:
    import torch

    found = machine()
    assert found["cpu"] and found["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert found["cpu"] == next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                                 if line.startswith("model name")), found["cpu"])
