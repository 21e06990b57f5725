"""dvc.lock checks on the data a run reads, including a project whose data/ lives elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labline.core.errors import ConfigError
from labline.data import integrity


def _project(tmp_path: Path, symlinked: bool) -> tuple[Path, Path]:
    """A project whose ``data/processed`` is recorded in dvc.lock; with ``symlinked`` its data/ is a link to scratch."""
    root = tmp_path / "project"
    root.mkdir()
    if symlinked:
        scratch = tmp_path / "scratch" / "data"
        scratch.mkdir(parents=True)
        (root / "data").symlink_to(scratch, target_is_directory=True)
    processed = root / "data" / "processed"
    processed.mkdir(parents=True)
    (processed / "digits.npz").write_bytes(b"arrays")
    lock = {"schema": "2.0", "stages": {"preprocess": {"outs": [
        {"path": "data/processed", "md5": integrity.dvc_md5(processed)}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return root, processed / "digits.npz"


@pytest.mark.parametrize("symlinked", [False, True], ids=["plain", "symlinked-data"])
def test_recorded_data_passes_and_a_hand_edit_is_one_error(tmp_path: Path, symlinked: bool) -> None:
    root, consumed = _project(tmp_path, symlinked)
    integrity.verify(root, [consumed])
    consumed.write_bytes(b"edited by hand")
    with pytest.raises(ConfigError, match="data/processed.*differs from dvc.lock"):
        integrity.verify(root, [consumed])


def test_a_link_is_named_as_the_project_names_it(tmp_path: Path) -> None:
    root, consumed = _project(tmp_path, symlinked=True)
    assert consumed.resolve() != consumed
    assert integrity.project_relative(root, consumed) == "data/processed/digits.npz"
    assert integrity.project_relative(root, Path("data/processed")) == "data/processed"


def test_data_outside_the_project_is_not_checked(tmp_path: Path) -> None:
    root, _ = _project(tmp_path, symlinked=False)
    elsewhere = tmp_path / "elsewhere.npz"
    elsewhere.write_bytes(b"not recorded")
    assert integrity.project_relative(root, elsewhere) is None
    integrity.verify(root, [elsewhere])
