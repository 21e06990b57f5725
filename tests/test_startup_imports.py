"""Commands that do not train start without the training stack: each runs in a fresh interpreter, which then reports
the modules it imported (module inspection, not timing: benches/startup.py times them). ``import lightning.pytorch``
alone takes ~6 s on these machines, and torch, Lightning and transformers are what a command that only prints, composes
or renders must never pay for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testroot import CHECKOUT

HEAVY = ("torch", "lightning", "transformers")
PROBE = """
import json, sys
from labline.cli import main
out, words = sys.argv[1], json.loads(sys.argv[2])
sys.argv = ["labline", *words]
try:
    main()
    code = 0
except SystemExit as stop:
    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
with open(out, "w") as fh:
    json.dump({"code": code, "imported": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}, fh)
""".replace("HEAVY", repr(HEAVY))
# (words, exit codes that count as having run): `docs --check` exits 2 when a rendered table is stale, after the same
# work.
COMMANDS = [
    (["--help"], (0,)),
    (["train", "--help"], (0,)),
    (["train", "--cfg", "job"], (0,)),
    (["ablate", "--help"], (0,)),
    (["report", "--help"], (0,)),
    (["ensemble", "--help"], (0,)),
    (["runs", "--help"], (0,)),
    (["stage", "--help"], (0,)),
    (["metrics", "--help"], (0,)),
    (["reproduce", "--help"], (0,)),
    (["measure", "--help"], (0,)),
    (["distill-compare", "--help"], (0,)),
    (["lab", "--help"], (0,)),
    (["params", "--output", "{tmp}/params.yaml"], (0,)),
    (["docs", "--check"], (0, 2)),  # run in the checkout: it reads its DVC pipelines
]


BAD_DATA = {
    "corrupt": "a,b\n1,2\n",  # a CSV renamed .npz
    "column-labels": {"x": np.zeros((20, 4), np.float32), "y": np.arange(20).reshape(20, 1) % 2},
    "one-class": {"x": np.zeros((20, 4), np.float32), "y": np.zeros(20, np.int64)},
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line_before_the_training_stack_is_imported(tmp_path: Path, case: str) -> None:
    """Mistakes found while loading one's own data: exit 2 naming the file or the labels, and neither torch nor
    Lightning imported by then (``labline train`` loads the data before them)."""
    path = tmp_path / f"{case}.npz"
    content = BAD_DATA[case]
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.savez(path, **content)
    out = tmp_path / "imported.json"
    words = ["train", "data=npz", f"data.source.path={path}"]
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), json.dumps(words)], cwd=CHECKOUT, capture_output=True,
                          text=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["code"] == 2, done.stderr[-2000:]
    assert report["imported"] == [], f"bad data reported after importing {report['imported'][:10]}"
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("labline: error:") and (str(path) in line or "label" in line), line


@pytest.mark.parametrize(("words", "codes"), COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_commands_that_do_not_train_import_no_torch_lightning_or_transformers(tmp_path: Path, words: list[str],
                                                                               codes: tuple[int, ...]) -> None:
    out = tmp_path / "imported.json"
    args = [w.format(tmp=tmp_path) for w in words]
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), json.dumps(args)], cwd=CHECKOUT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["code"] in codes, (report, done.stdout[-1000:], done.stderr[-1000:])
    assert report["imported"] == [], f"labline {' '.join(words)} imported {report['imported'][:10]}"
