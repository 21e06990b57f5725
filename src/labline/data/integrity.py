"""Data a run consumes must be the data DVC recorded.

If ``dvc.lock`` records an output folder that a run reads (``data/processed``,
``data/splits``), its content hash is recomputed the way DVC computes it (md5 of
each file; for a folder, md5 of the sorted JSON list of ``{md5, relpath}`` plus
``.dir``) and compared. A file edited by hand, or a stage run outside DVC, is
then a one-line error instead of a silently different number.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml

from labline.core.errors import ConfigError
from labline.core.io import md5_file


def dvc_md5(path: Path) -> str:
    """The hash DVC 3 records for a file or folder output."""
    if path.is_file():
        return md5_file(path)
    entries = sorted(({"md5": md5_file(f), "relpath": f.relative_to(path).as_posix()}
                      for f in path.rglob("*") if f.is_file()), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def recorded_outputs(root: Path) -> dict[str, str]:
    """``{output path: md5}`` of every stage output in ``dvc.lock`` (empty without one)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        raise ConfigError(str(lock), "is not valid YAML", "restore it from git or re-run `dvc repro`") from None
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", []) if "md5" in out}


def project_relative(root: Path, path: Path) -> str | None:
    """``path`` as dvc.lock names it, or None outside the project.

    The unresolved path is tried first: a project whose ``data/`` is a symlink to
    scratch storage (usual on clusters) still names its outputs ``data/...``.
    """
    if not path.is_absolute():
        return path.as_posix()
    for inside, top in ((Path(os.path.abspath(path)), Path(os.path.abspath(root))), (path.resolve(), root.resolve())):
        if inside.is_relative_to(top):
            return inside.relative_to(top).as_posix()
    return None


def verify(root: Path, consumed: list[Path]) -> None:
    """Raise if a consumed output folder differs from what dvc.lock recorded for it."""
    recorded = recorded_outputs(root)
    for path in consumed:
        rel = project_relative(root, path)
        if rel is None:
            continue
        for out, md5 in recorded.items():
            if (rel == out or rel.startswith(out + "/")) and (root / out).exists():
                actual = dvc_md5(root / out)
                if actual != md5:
                    raise ConfigError(out, f"content hash {actual[:12]} differs from dvc.lock's {md5[:12]}",
                                      "`dvc repro` (or `dvc checkout`) to restore the recorded data")
