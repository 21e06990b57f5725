"""The catalogue of user mistakes: each one is a single line naming the problem, exit code 2,
no traceback, no MLflow run created or left RUNNING, and no earlier output overwritten.

Commands run in-process through ``labline.cli.main`` (the real entry point) inside a
temporary project copy; tests/e2e/test_cli.py checks the same contract in real subprocesses.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from labline.cli import main
from labline.tracking.store import tracking_uri

pytestmark = pytest.mark.e2e

FAST = ["trainer.max_epochs=1", "threads=1"]


@pytest.fixture(scope="module")
def bad_files(project: Path) -> Path:
    folder = project / "bad"
    folder.mkdir()
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.images[:, None].astype(np.float32), digits.target
    np.savez(folder / "good.npz", x=x, y=y)
    good = (folder / "good.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(good[: len(good) // 3])
    (folder / "garbage.npz").write_bytes(b"this is not a zip file at all")
    x_nan = x.copy()
    x_nan[5, 0, 3, 3] = np.nan
    np.savez(folder / "nan.npz", x=x_nan, y=y)
    np.savez(folder / "float_labels.npz", x=x, y=y.astype(np.float32) + 0.5)
    lonely = y.copy()
    lonely[0] = 10  # class 10 has exactly one sample: some split cannot contain it
    np.savez(folder / "lonely_class.npz", x=x, y=lonely)
    np.savez(folder / "mismatch.npz", x=x[:100], y=y[:50])
    (folder / "params_broken.yaml").write_text("data: [unclosed\n")
    from labline.models.backbones.mlp import MLP

    mlp = MLP(in_shape=[1, 8, 8], hidden=[16])
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in mlp.state_dict().items()}}, folder / "mlp.ckpt")
    return folder


CASES = [
    # (id, argv, text the single line must contain)
    ("unknown-group-option", ["train", "backbone=resnett"], "valid: "),
    ("unknown-experiment", ["train", "experiment=nope"], "experiment=nope"),
    ("misspelled-key", ["train", "optimizer.lrr=0.1"], "optimizer.lrr"),
    ("misspelled-top-key", ["train", "seeed=1"], "seeed"),
    ("wrong-type-int", ["train", "trainer.max_epochs=abc"], "trainer.max_epochs"),
    ("wrong-type-bool", ["train", "trainer.deterministic=sometimes"], "trainer.deterministic"),
    ("wrong-type-list", ["train", "backbone.channels=64"], "backbone.channels"),
    ("bad-override-syntax", ["train", "optimizer.lr=[0.1"], "override"),
    ("negative-lr", ["train", "optimizer.lr=-1", *FAST], "optimizer"),
    ("negative-weight-decay", ["train", "optimizer.weight_decay=-0.1", *FAST], "optimizer"),
    ("dropout-above-1", ["train", "backbone.dropout=1.5", *FAST], "backbone.dropout"),
    ("negative-dropout", ["train", "backbone.dropout=-0.1", *FAST], "backbone.dropout"),
    ("unknown-activation", ["train", "backbone.activation=swishy", *FAST], "backbone.activation"),
    ("unknown-norm", ["train", "backbone.norm=groupy", *FAST], "backbone.norm"),
    ("empty-channels", ["train", "backbone.channels=[]", *FAST], "backbone.channels"),
    ("patch-does-not-divide", ["train", "backbone=vit", "backbone.patch_size=3", *FAST], "patch"),
    ("negative-seed", ["train", "seed=-1", *FAST], "seed"),
    ("zero-threads", ["train", "threads=0", "trainer.max_epochs=1"], "threads"),
    ("bad-precision", ["train", "trainer.precision=17", *FAST], "trainer"),
    ("zero-batch-size", ["train", "data.batch_size=0", *FAST], "data.batch_size"),
    ("zero-checkpoint-interval", ["train", "checkpoint_every_n_epochs=0", *FAST], "checkpoint_every_n_epochs"),
    ("unknown-nonfinite-action", ["train", "nonfinite=ignore", *FAST], "nonfinite"),
    ("split-no-train-data", ["train", "split.val=0.6", "split.test=0.5", *FAST], "split"),
    ("split-zero-val", ["train", "split.val=0.0", *FAST], "split.val"),
    ("unimportable-target", ["train", "backbone._target_=no.such.Module", *FAST], "backbone._target_"),
    ("data-path-missing-value", ["train", "data=npz", *FAST], "data.source"),
    ("missing-data-file", ["train", "data=npz", "data.source.path=bad/nope.npz", *FAST], "file not found"),
    ("truncated-data-file", ["train", "data=npz", "data.source.path=bad/truncated.npz", *FAST], "corrupt or truncated"),
    ("garbage-data-file", ["train", "data=npz", "data.source.path=bad/garbage.npz", *FAST], "corrupt or truncated"),
    ("nan-in-data", ["train", "data=npz", "data.source.path=bad/nan.npz", *FAST], "NaN"),
    ("float-labels", ["train", "data=npz", "data.source.path=bad/float_labels.npz", *FAST], "integers"),
    ("inputs-labels-mismatch", ["train", "data=npz", "data.source.path=bad/mismatch.npz", *FAST], "do not match"),
    ("class-missing-from-a-split", ["train", "data=npz", "data.source.path=bad/lonely_class.npz",
                                    "split.stratify=false", *FAST], "no samples"),
    ("checkpoint-other-architecture", ["train", "backbone=cnn", "backbone.weights=bad/mlp.ckpt", *FAST], "backbone.weights"),
    ("missing-checkpoint", ["train", "backbone.weights=bad/none.ckpt", *FAST], "backbone.weights"),
    ("unknown-run-id-weights", ["train", "backbone.weights=0123456789abcdef0123456789abcdef", *FAST], "backbone.weights"),
    ("unknown-run-id-reproduce", ["reproduce", "0123456789abcdef0123456789abcdef"], "no MLflow run"),
    ("stage-before-inputs", ["stage", "split"], "file not found"),
    ("evaluate-before-train", ["stage", "evaluate"], "run the train stage first"),
    ("missing-params-file", ["stage", "train", "--params", "bad/absent.yaml"], "params file not found"),
    ("missing-metrics-file", ["metrics", "bad/absent.json"], "metrics file not found"),
]


def _run_count() -> int:
    client = MlflowClient(tracking_uri())
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


def _running() -> int:
    client = MlflowClient(tracking_uri())
    return sum(len(client.search_runs([e.experiment_id], "attributes.status = 'RUNNING'")) for e in client.search_experiments())


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_one_line_exit_2_and_loses_nothing(project: Path, bad_files: Path, monkeypatch, capsys,
                                                       argv: list[str], needle: str) -> None:
    monkeypatch.chdir(project)
    earlier = project / "outputs"
    earlier.mkdir(exist_ok=True)
    (earlier / "earlier_result.json").write_text('{"test/acc": 0.99}')
    (project / "params.yaml").touch()
    before_runs, before_outputs = _run_count(), _snapshot(project)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("labline: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert _run_count() == before_runs, "a user error must not create an MLflow run"
    assert _running() == 0
    after = _snapshot(project)
    assert {k: after.get(k) for k in before_outputs} == before_outputs, "an earlier file was changed or removed"


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
