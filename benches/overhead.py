"""labline vs a plain PyTorch loop: same model, data, seed, batch size and threads, in one process.

Both sides train the default experiment's model (CNN + linear head, Adam, cross-entropy) on the
processed digits split and validate once per epoch. labline runs its real path (Lightning Trainer,
torchmetrics, per-epoch MLflow logging, checkpointing, progress bar); the plain loop computes the
same loss and accuracy by hand. Rounds alternate between the two so background load hits both.

Each epoch is timed twice: wall clock (what a user waits) and the process's CPU time (every thread's
user + system time). On a shared 2-core machine other jobs inflate wall time by an amount that differs
from epoch to epoch, while CPU time counts only this process's work, so the CPU-time ratio is the
load-robust measure of labline's overhead and the wall ratio is the one to trust on an idle machine.

    python benches/overhead.py [--epochs 6] [--rounds 3] [--threads 2] [--batch-size 64] [--set KEY=VALUE ...]
                               [--out docs/benchmarks.md]

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
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from labline.core.config import compose_config  # noqa: E402
from labline.runs.assembly import prepare_run  # noqa: E402
from labline.runs.lightning_run import open_training_run  # noqa: E402


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


class EpochTimer(pl.Callback):
    """(wall, CPU) time of each training epoch including its validation pass."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = clocks()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(since(self.start))


def labline_epochs(overrides: list[str], workdir: Path) -> list[tuple[float, float]]:
    cfg = compose_config(overrides, conf=ROOT / "conf")
    run = prepare_run(cfg, workdir, ROOT)
    timer = EpochTimer()
    run.trainer.callbacks.append(timer)
    with open_training_run(run, "bench-overhead", {"bench": "overhead"}):
        run.trainer.fit(run.task, datamodule=run.datamodule)
    return timer.times


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


def lightning_epochs(overrides: list[str], workdir: Path) -> list[tuple[float, float]]:
    """A bare Trainer (no logger, checkpoints, progress bar or callbacks but the timer)."""
    cfg = compose_config(overrides, conf=ROOT / "conf")
    run = prepare_run(cfg, workdir, ROOT)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=cfg.trainer.max_epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(BareModule(nn.Sequential(run.task.backbone, run.task.head), cfg.optimizer.lr), datamodule=run.datamodule)
    return timer.times


def plain_epochs(overrides: list[str], workdir: Path) -> tuple[list[tuple[float, float]], int]:
    """(wall, CPU) per epoch, and the number of training steps per epoch."""
    cfg = compose_config(overrides, conf=ROOT / "conf")
    run = prepare_run(cfg, workdir, ROOT)  # same seed, threads, data, model weights init
    model = nn.Sequential(run.task.backbone, run.task.head)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    loss_fn = nn.CrossEntropyLoss()
    train, val = run.datamodule.train_dataloader(), run.datamodule.val_dataloader()
    times = []
    for _ in range(cfg.trainer.max_epochs):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the default experiment's is 64 (17 steps per epoch)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides, on both sides")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    os.environ.setdefault("LABLINE_PROJECT_ROOT", tempfile.mkdtemp(prefix="labline-bench-"))
    overrides = [f"trainer.max_epochs={args.epochs}", f"threads={args.threads}", f"data.batch_size={args.batch_size}",
                 "callbacks=none",
                 "trainer.enable_progress_bar=true", "logger.experiment_name=bench", *args.set]
    lab, plain, bare = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            lab += labline_epochs(overrides, Path(tmp) / f"lab{r}")[1:]  # epoch 0 includes warm-up
            times, steps = plain_epochs(overrides, Path(tmp) / f"plain{r}")
            plain += times[1:]
            bare += lightning_epochs(overrides, Path(tmp) / f"bare{r}")[1:]
    cells = []
    for clock in (0, 1):  # wall, CPU
        plain_ms = statistics.median(t[clock] for t in plain) * 1e3
        lab_ms = statistics.median(t[clock] for t in lab) * 1e3
        cells += [f"{plain_ms:.1f}", f"{lab_ms:.1f}", f"{lab_ms / plain_ms:.3f}x"]
    bare_ratio = statistics.median(t[0] for t in bare) / statistics.median(t[0] for t in plain)
    cells.append(f"{bare_ratio:.3f}x")
    load = os.getloadavg()[0]
    model = " ".join(f"`{o}`" for o in args.set) or "default"
    line = (f"| {time.strftime('%Y-%m-%d')} | {model} | {args.batch_size} ({steps}) | {args.epochs} x {args.rounds} | "
            f"{args.threads} | {load:.1f} | {' | '.join(cells)} |")
    print(f"median epoch (train + val), plain / labline / ratio: wall {' / '.join(cells[:3])}, CPU {' / '.join(cells[3:6])}; "
          f"bare Lightning / plain wall {cells[6]}")
    _record(Path(args.out), line)


COLUMNS = ("| date | model | batch (steps) | epochs x rounds | threads | load | plain | labline | x | plain CPU | labline CPU "
           "| CPU x | Lightning x |\n" + "| --- " * 13 + "|")
HEADER = """## Overhead: labline vs a plain PyTorch loop (`benches/overhead.py`)

Default model (CNN [32, 64, 128] + linear head, Adam; the model column names any overrides) on the digits
hold-out split (1077 train / 360 val; batch size and steps per epoch in the batch column), median epoch
time (train + validation) after the first epoch, labline and plain rounds interleaved in one process;
wall clock and process CPU time (all threads) in ms per epoch (plain, labline: wall), with the 1-minute
load average at the end; the last column is a bare Lightning Trainer on the same network (no logger,
checkpoints, metrics or progress bar) against the plain loop. Goal: at most 1.05x.

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
