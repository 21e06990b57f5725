"""The catalogue of user mistakes: each one is a single line naming the problem, exit code 2,
no traceback, no MLflow run created or left RUNNING, and no earlier output overwritten.

Commands run in-process through ``labline.cli.main`` (the real entry point) inside a
temporary project copy; ``SUBPROCESS_CASES`` run the installed ``labline`` in real subprocesses (what a
user types, with the environment they have) and also check that no empty run folder is left behind.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from project_copy import BIN, project_env, run_cli

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
    np.savez(folder / "labels_column.npz", x=x, y=y[:, None])
    np.savez(folder / "one_class.npz", x=x, y=np.zeros_like(y))
    table = "a,b,colour,label\n1.0,2.0,red,x\n2.0,,blue,y\n3.0,1.0,red,x\n"
    (folder / "gaps.csv").write_text(table)
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
    ("zero-epochs", ["train", "trainer.max_epochs=0"], "trainer.max_epochs"),
    ("forever-epochs", ["train", "trainer.max_epochs=-1"], "trainer.max_epochs"),
    ("no-training-batches", ["train", "+trainer.limit_train_batches=0"], "trainer.limit_train_batches"),
    # a folder nobody can write (as root too: /proc takes no files), as a read-only project's outputs/ would be
    ("unwritable-run-folder", ["train", "hydra.run.dir=/proc/labline/outputs"], "hydra.run.dir"),
    ("unknown-added-key", ["train", "+unknown_key=1", *FAST], "unknown_key: adds a top-level key nothing reads"),
    ("labels-n-by-1", ["train", "data=npz", "data.source.path=bad/labels_column.npz", *FAST], "labels have shape (1797, 1)"),
    ("single-class", ["train", "data=npz", "data.source.path=bad/one_class.npz", *FAST], "two classes or more"),
    ("seed-beyond-32-bits", ["train", f"seed={2**40}", *FAST], "seed"),
    ("multirun-unknown-search", ["train", "-m", "hparams_search=nope"], "valid: digits_cnn"),
    ("stratified-k-above-rarest", ["train", "split=stratified_kfold", "split.k=200", *FAST], "split.k"),
    ("given-split-without-one", ["train", "split=given", *FAST], "comes without a split of its own"),
    ("csv-missing-values", ["train", "data=csv", "data.source.path=bad/gaps.csv", "data.source.target=label", *FAST],
     "missing values in column b"),
    ("csv-unknown-target", ["train", "data=csv", "data.source.path=bad/gaps.csv", "data.source.target=lable", *FAST],
     "valid: a, b, colour, label"),
    ("image-folder-not-a-folder", ["train", "data=image_folder", "data.source.root=bad/nope", *FAST], "data.source.root"),
]

# What a user types, in a real process: (id, extra environment, argv, text the one stderr line must contain)
SUBPROCESS_CASES = [
    *[(name, {}, argv, needle) for name, argv, needle in CASES if name in {
        "zero-epochs", "forever-epochs", "unknown-added-key", "labels-n-by-1", "single-class", "seed-beyond-32-bits",
        "multirun-unknown-search", "stratified-k-above-rarest", "given-split-without-one", "csv-missing-values",
        "image-folder-not-a-folder", "missing-data-file"}],
    ("tracking-uri-unknown-scheme", {"MLFLOW_TRACKING_URI": "foo://bar"}, ["train", *FAST], "MLFLOW_TRACKING_URI"),
    ("tracking-uri-not-a-uri", {"MLFLOW_TRACKING_URI": "notauri"}, ["train", *FAST], "MLFLOW_TRACKING_URI"),
    ("tracking-uri-unwritable", {"MLFLOW_TRACKING_URI": "sqlite:////proc/labline/no.db"}, ["train", *FAST],
     "cannot be written"),
]
SUBCOMMANDS = ["train", "ablate", "report", "stage", "params", "metrics", "reproduce", "docs", "runs", "plots-html",
               "ensemble", "distill-compare", "lab", "evaluate"]


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


def _project_runs(project: Path) -> int:
    store = project / "mlflow.db"
    if not store.exists():
        return 0
    client = MlflowClient(f"sqlite:///{store}")
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


def _run_folders(project: Path) -> set[str]:
    return {p.parent.as_posix() for top in ("outputs", "multirun") for p in (project / top).rglob(".hydra")}


@pytest.mark.parametrize(("env", "argv", "needle"), [c[1:] for c in SUBPROCESS_CASES], ids=[c[0] for c in SUBPROCESS_CASES])
def test_mistake_in_a_real_process_is_one_line_exit_2_before_any_run_folder(project: Path, bad_files: Path,
                                                                             env: dict[str, str], argv: list[str],
                                                                             needle: str) -> None:
    before_runs, before_folders = _project_runs(project), _run_folders(project)
    result = subprocess.run([str(BIN / "labline"), *argv], cwd=project, env=project_env(project) | env,
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("labline: error: ") and needle in lines[0], result.stderr[-2000:]
    assert _project_runs(project) == before_runs, "a user error must not create an MLflow run"
    assert _run_folders(project) == before_folders, "a rejected command must not leave a run folder"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(project: Path, command: str) -> None:
    result = run_cli(project, "labline", command, "--help")
    assert result.returncode == 0, result.stderr[-1000:]
    assert "usage" in result.stdout.lower() or "labline" in result.stdout.lower(), result.stdout[:500]
