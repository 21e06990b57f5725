"""labline vs a plain PyTorch loop, a bare Lightning Trainer and its nearest peer: same model, data, seed,
batch size and threads, in one process.

Every side trains the default experiment's model (CNN + linear head, Adam, cross-entropy) on the
processed digits split and validates once per epoch. labline runs its real path (Lightning Trainer,
torchmetrics, per-epoch MLflow logging, checkpointing, progress bar); the plain loop computes the
same loss and accuracy by hand; the bare Trainer has no logger, checkpoint, metric or progress bar;
the peer is what a lightning-hydra-template (LHT) project trains by default, written here from its
documented behaviour: its ``MNISTLitModule`` pattern (torchmetrics ``Accuracy`` and ``MeanMetric``
updated and logged every step, ``MaxMetric`` for the best validation accuracy) and its default
callbacks (``ModelCheckpoint`` on ``val/acc`` with ``save_last``, ``EarlyStopping``,
``RichModelSummary``, ``RichProgressBar``), once without a logger (LHT's default) and once with
Lightning's ``MLFlowLogger`` on a SQLite store (labline's store). The plain loop, the bare Trainer
and the peer read the data the way their users would write it: a ``DataLoader`` over a
``TensorDataset`` (per-sample indexing and collate); labline uses its own datamodule. Rounds
alternate between the sides so background load hits all of them.

Each epoch is timed twice: wall clock (what a user waits) and the process's CPU time (every thread's
user + system time). On a shared 2-core machine other jobs inflate wall time by an amount that differs
from epoch to epoch, while CPU time counts only this process's work, so the CPU-time ratio is the
load-robust measure of labline's overhead and the wall ratio is the one to trust on an idle machine.

    python benches/overhead.py [--epochs 6] [--rounds 3] [--threads 2] [--batch-size 64] [--set KEY=VALUE ...]
                               [--try CANDIDATE ...] [--out docs/benchmarks.md]

``--try`` applies a candidate that labline does not ship to labline's side only, to measure what it would
buy (``CANDIDATES``): ``async_checkpoint`` (Lightning's ``AsyncCheckpointIO``), ``async_mlflow`` (MLflow's
asynchronous ``log_batch``, flushed when training ends), ``binned_ranking`` (AUROC / AP over 200 thresholds
instead of every score; it fails under labline's deterministic trainer, see docs/benchmarks.md),
``per_sample_loader`` (labline's datamodule without its whole-batch fast path).

labline's extra work is mostly per epoch (MLflow logging, the best and the resumable checkpoint, metric
computation), so its ratio depends on how long an epoch takes: run it at two batch sizes to see the
per-epoch and the per-step parts, and with ``--set`` (any Hydra overrides, e.g. a wider backbone) to see
how it shrinks as the model's own work grows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichModelSummary, RichProgressBar
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import Accuracy, MulticlassAUROC, MulticlassAveragePrecision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from labline.core.config import compose_config  # noqa: E402
from labline.data.samplers import EpochShuffle  # noqa: E402
from labline.metrics.classification import classification_metrics  # noqa: E402
from labline.runs.assembly import PreparedRun, prepare_run  # noqa: E402
from labline.runs.lightning_run import open_training_run  # noqa: E402

Times = list[tuple[float, float]]


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


class EpochTimer(pl.Callback):
    """(wall, CPU) time of each training epoch including its validation pass."""

    def __init__(self) -> None:
        self.times: Times = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = clocks()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(since(self.start))


# -- candidates labline does not ship, applied to its side only (--try) ------------------------------------


def _async_checkpoint(run: PreparedRun) -> Callable[[], None]:
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    run.trainer.strategy.checkpoint_io = AsyncCheckpointIO(run.trainer.strategy.checkpoint_io)
    return lambda: None  # the strategy's teardown waits for the last save


def _async_mlflow(run: PreparedRun) -> Callable[[], None]:
    from mlflow.entities import Metric

    handle, pending = run.curves.tracker, []

    class AsyncEpochs:
        def log_epochs(self, rows: list[dict[str, float]]) -> None:
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, int(row["epoch"])) for row in rows for k, v in row.items() if k != "epoch"]
            pending.append(handle.store.client.log_batch(handle.run_id, metrics=metrics, synchronous=False))

    run.curves.tracker = AsyncEpochs()
    return lambda: [operation.wait() for operation in pending]  # every curve is in MLflow before the run ends


def _binned_ranking(run: PreparedRun) -> Callable[[], None]:
    task = run.task
    metrics = dict(classification_metrics(task.num_classes, task.hparams.top_k).items())
    metrics |= {"auroc_macro": MulticlassAUROC(task.num_classes, average="macro", thresholds=200),
                "ap_macro": MulticlassAveragePrecision(task.num_classes, average="macro", thresholds=200)}
    task.metrics["val_metrics"] = MetricCollection(metrics).clone(prefix="val/")
    return lambda: None


def _per_sample_loader(run: PreparedRun) -> Callable[[], None]:
    datamodule = run.datamodule

    def loader(part: str, shuffle: bool) -> DataLoader:  # ArrayDataModule's loader before its whole-batch path
        sampler = EpochShuffle(len(datamodule.sets[part]), datamodule.seed) if shuffle else None
        if shuffle:
            datamodule.shuffler = sampler
        return DataLoader(datamodule.sets[part], batch_size=datamodule.batch_size, sampler=sampler,
                          generator=torch.Generator().manual_seed(datamodule.seed))

    datamodule._loader = loader
    return lambda: None


CANDIDATES = {"async_checkpoint": _async_checkpoint, "async_mlflow": _async_mlflow, "binned_ranking": _binned_ranking,
              "per_sample_loader": _per_sample_loader}


# -- the sides --------------------------------------------------------------------------------------------


def labline_epochs(overrides: list[str], workdir: Path, candidates: list[str] = ()) -> Times:
    cfg = compose_config(overrides, conf=ROOT / "conf")
    run = prepare_run(cfg, workdir, ROOT)
    timer = EpochTimer()
    run.trainer.callbacks.append(timer)
    with open_training_run(run, "bench-overhead", {"bench": "overhead"}):
        finish = [CANDIDATES[name](run) for name in candidates]
        run.trainer.fit(run.task, datamodule=run.datamodule)
        for done in finish:
            done()
    return timer.times


def _user_parts(overrides: list[str], workdir: Path) -> tuple[PreparedRun, nn.Module, DataLoader, DataLoader]:
    """The same seed, threads, data and initial weights as labline's side; the loaders a PyTorch user writes."""
    cfg = compose_config(overrides, conf=ROOT / "conf")
    run = prepare_run(cfg, workdir, ROOT)
    sets, batch = run.datamodule.sets, cfg.data.batch_size
    train = DataLoader(sets["train"], batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
    return run, nn.Sequential(run.task.backbone, run.task.head), train, DataLoader(sets["val"], batch_size=batch)


class BareModule(pl.LightningModule):
    """The same network, loss and optimizer in the smallest LightningModule: what Lightning itself costs."""

    def __init__(self, model: nn.Module, lr: float):
        super().__init__()
        self.model, self.lr, self.loss_fn = model, lr, nn.CrossEntropyLoss()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.loss_fn(self.model(batch[0]), batch[1])

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.loss_fn(self.model(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def lightning_epochs(overrides: list[str], workdir: Path) -> Times:
    """A bare Trainer (no logger, checkpoints, progress bar or callbacks but the timer)."""
    run, model, train, val = _user_parts(overrides, workdir)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=run.cfg.trainer.max_epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(BareModule(model, run.cfg.optimizer.lr), train_dataloaders=train, val_dataloaders=val)
    return timer.times


class PeerModule(BareModule):
    """lightning-hydra-template's ``MNISTLitModule`` on the same network: ``MeanMetric`` / ``Accuracy`` per part,
    updated (called) and logged every step, reduced per epoch; ``MaxMetric`` tracks the best val accuracy."""

    def __init__(self, model: nn.Module, lr: float, num_classes: int):
        super().__init__(model, lr)
        self.train_acc, self.val_acc = (Accuracy(task="multiclass", num_classes=num_classes) for _ in range(2))
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def on_train_start(self) -> None:
        self.val_loss.reset()
        self.val_acc.reset()
        self.val_acc_best.reset()

    def _model_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch[0])
        return self.loss_fn(logits, batch[1]), logits.argmax(dim=1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds = self._model_step(batch)
        self.train_loss(loss)
        self.train_acc(preds, batch[1])
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, preds = self._model_step(batch)
        self.val_loss(loss)
        self.val_acc(preds, batch[1])
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)


def peer_epochs(overrides: list[str], workdir: Path, mlflow: bool = False) -> Times:
    """LHT's default training (configs/callbacks/default.yaml, trainer/default.yaml; logger null, or mlflow)."""
    run, model, train, val = _user_parts(overrides, workdir)
    timer = EpochTimer()
    callbacks = [ModelCheckpoint(dirpath=workdir / "checkpoints", filename="epoch_{epoch:03d}", monitor="val/acc",
                                 mode="max", save_last=True, auto_insert_metric_name=False),
                 EarlyStopping(monitor="val/acc", patience=100, mode="max"), RichModelSummary(max_depth=-1),
                 RichProgressBar(), timer]
    logger = MLFlowLogger(experiment_name="bench-peer", tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}") if mlflow else False
    trainer = pl.Trainer(default_root_dir=workdir, min_epochs=1, max_epochs=run.cfg.trainer.max_epochs, accelerator="cpu",
                         devices=1, check_val_every_n_epoch=1, deterministic=False, callbacks=callbacks, logger=logger)
    trainer.fit(PeerModule(model, run.cfg.optimizer.lr, run.datamodule.num_classes), train_dataloaders=train,
                val_dataloaders=val)
    return timer.times


def plain_epochs(overrides: list[str], workdir: Path) -> tuple[Times, int]:
    """(wall, CPU) per epoch, and the number of training steps per epoch."""
    run, model, train, val = _user_parts(overrides, workdir)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.cfg.optimizer.lr)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for _ in range(run.cfg.trainer.max_epochs):
        start = clocks()
        model.train()
        for x, y in train:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        correct, total, val_loss = 0, 0, 0.0
        with torch.no_grad():
            for x, y in val:
                logits = model(x)
                val_loss += float(loss_fn(logits, y)) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
        times.append(since(start))
    return times, len(train)


SIDES = ("plain", "lightning", "peer", "peer_mlflow", "labline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the default experiment's is 64 (17 steps per epoch)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides, on every side")
    parser.add_argument("--try", dest="candidates", nargs="*", default=[], choices=sorted(CANDIDATES),
                        help="candidates applied to labline's side only")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    os.environ.setdefault("LABLINE_PROJECT_ROOT", tempfile.mkdtemp(prefix="labline-bench-"))
    overrides = [f"trainer.max_epochs={args.epochs}", f"threads={args.threads}", f"data.batch_size={args.batch_size}",
                 "callbacks=none",
                 "trainer.enable_progress_bar=true", "logger.experiment_name=bench", *args.set]
    load_start = os.getloadavg()[0]
    times: dict[str, Times] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):  # epoch 0 of each side includes warm-up
            times["labline"] += labline_epochs(overrides, Path(tmp) / f"lab{r}", args.candidates)[1:]
            plain, steps = plain_epochs(overrides, Path(tmp) / f"plain{r}")
            times["plain"] += plain[1:]
            times["lightning"] += lightning_epochs(overrides, Path(tmp) / f"bare{r}")[1:]
            times["peer"] += peer_epochs(overrides, Path(tmp) / f"peer{r}")[1:]
            times["peer_mlflow"] += peer_epochs(overrides, Path(tmp) / f"peermlflow{r}", mlflow=True)[1:]
    wall, cpu = ({side: statistics.median(t[clock] for t in times[side]) * 1e3 for side in SIDES} for clock in (0, 1))
    ratio = lambda clock, a, b: f"{clock[a] / clock[b]:.3f}x"  # noqa: E731
    cells = [f"{cpu['plain']:.1f}", f"{cpu['labline']:.1f}", *(ratio(cpu, "labline", b) for b in SIDES[:4]),
             ratio(cpu, "lightning", "plain"), ratio(cpu, "peer", "plain"), ratio(cpu, "peer_mlflow", "plain"),
             ratio(wall, "labline", "plain"), ratio(wall, "labline", "lightning")]
    load = f"{load_start:.1f}-{os.getloadavg()[0]:.1f}"
    model = " ".join([*(f"`{o}`" for o in args.set), *(f"try `{c}`" for c in args.candidates)]) or "default"
    line = (f"| {time.strftime('%Y-%m-%d')} | {model} | {args.batch_size} ({steps}) | {args.epochs} x {args.rounds} | "
            f"{args.threads} | {load} | {' | '.join(cells)} |")
    print("median epoch ms (wall / CPU): " + ", ".join(f"{side} {wall[side]:.1f} / {cpu[side]:.1f}" for side in SIDES))
    print(line)
    _record(Path(args.out), line)


COLUMNS = ("| date | model | batch (steps) | epochs x rounds | threads | load | plain CPU | labline CPU | labline / plain "
           "| labline / Lightning | labline / peer | labline / peer + MLflow | Lightning / plain | peer / plain "
           "| peer + MLflow / plain | wall: labline / plain | wall: labline / Lightning |\n" + "| --- " * 17 + "|")
HEADER = """## Overhead: labline vs a plain loop, bare Lightning and its peer (`benches/overhead.py`)

Default model (CNN [32, 64, 128] + linear head, Adam; the model column names any overrides and `--try`
candidates) on the digits hold-out split (1077 train / 360 val; batch size and steps per epoch in the batch
column), median epoch time (train + validation) after each side's first epoch, all sides interleaved in one
process, `round` after round. CPU time is the process's (all threads), in ms per epoch; the ratios are of
CPU time except the two wall columns; load is the 1-minute load average at the start and the end. Sides:
the plain PyTorch loop; a bare Lightning Trainer (no logger, checkpoint, metric or progress bar); the peer,
a lightning-hydra-template-style training (its `MNISTLitModule` pattern and default callbacks:
ModelCheckpoint, EarlyStopping, RichModelSummary, RichProgressBar; torchmetrics Accuracy and MeanMetric
updated every step), without a logger and with Lightning's MLFlowLogger; labline's real path. The plain
loop, the bare Trainer and the peer read batches through a `DataLoader` over a `TensorDataset`, as their
users write it; labline through its datamodule. Goals: labline at most 1.15x plain and 1.05x Lightning.

""" + COLUMNS + """
"""


def _record(path: Path, line: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\nMeasured on the project's 2-core CPU machines.\n\n"
    if HEADER not in text:
        text = text.rstrip() + "\n\n" + HEADER
    text = text.replace(HEADER, HEADER + line + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
