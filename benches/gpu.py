"""Images per second: labline vs a raw PyTorch loop on one device, and labline's epoch time over 1, 2, ... ranks.

Both sides train the same model (a ResNet from labline's library, built by labline from the same config and
seed), on the same data (procedural shapes rendered at 32 x 32, served by the same DataLoader), at the same
batch size and precision (bf16 autocast on a GPU, float32 on the CPU). labline runs its real path (Trainer,
torchmetrics, curves, checkpoints, the MLflow run); the raw loop is forward, loss, backward, Adam step.
Throughput is training images per second over the training batches of each epoch (validation excluded), the
median over the epochs after the first (warm-up); the goal on a GPU is at least 0.95x the raw loop.

``--ranks 1 2`` also times labline's epoch (training batches) with ``trainer.devices`` = 1, 2 (DDP: rank zero
here, the other ranks started by Lightning); on the CPU (gloo) that is a correctness run, not a speed-up.

    python benches/gpu.py                               # one GPU: ResNet, 32x32, batch 256, bf16; DDP if 2 GPUs
    python benches/gpu.py --device cpu --tiny --per-class 40 --batch-size 64 --epochs 4 --threads 1 --ranks 1 2 --record
    python benches/gpu.py --device cpu --per-class 4 --batch-size 16 --epochs 2 --tiny   # smoke test (the suite)

``--record`` appends the rows to docs/benchmarks.md (section "Distributed and GPU"); nothing is written otherwise.
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
from labline.runs.lightning_run import fit, open_training_run  # noqa: E402

TINY = ["backbone.widths=[8,8]", "backbone.depths=[1,1]"]
SECTION = "## Distributed and GPU (`benches/gpu.py`)"


class TrainTimer(pl.Callback):
    """Wall time of each epoch's training batches (from the epoch start to its validation), device synchronised."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync()
        self.start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.start is not None and not trainer.sanity_checking:
            _sync()
            self.times.append(time.perf_counter() - self.start)
            self.start = None


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def overrides(args: argparse.Namespace, ranks: int = 1) -> list[str]:
    gpu = args.device == "cuda"
    trainer = ["trainer=gpu", f"trainer.devices={ranks}"] if gpu else \
        (["trainer=ddp", f"trainer.devices={ranks}"] if ranks > 1 else ["trainer=cpu"])
    return ["data=shapes", "data.source.image_size=32", f"data.source.per_class={args.per_class}", "backbone=resnet",
            *(TINY if args.tiny else []), *trainer, f"trainer.precision={'bf16-mixed' if gpu else '32-true'}",
            f"trainer.max_epochs={args.epochs}", f"data.batch_size={args.batch_size}", f"threads={args.threads}",
            "callbacks=none", "trainer.enable_progress_bar=false", "logger.experiment_name=bench-gpu", *args.set]


def labline_epochs(cfg_overrides: list[str], workdir: Path) -> tuple[list[float], int]:
    """labline's training-batch time per epoch (rank zero's) and the training images per epoch (all ranks)."""
    run = prepare_run(compose_config(cfg_overrides, conf=ROOT / "conf"), workdir, ROOT)
    timer = TrainTimer()
    run.trainer.callbacks.append(timer)
    with open_training_run(run, "bench-gpu", {"bench": "gpu"}) as handle:
        fit(run, handle)
    return timer.times, len(run.datamodule.sets["train"])


def raw_epochs(cfg_overrides: list[str], workdir: Path, device: str) -> tuple[list[float], int]:
    """The same network, data loader, batch and precision in a hand-written loop."""
    run = prepare_run(compose_config(cfg_overrides, conf=ROOT / "conf"), workdir, ROOT)
    model = nn.Sequential(run.task.backbone, run.task.head).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.cfg.optimizer.lr)
    loss_fn = nn.CrossEntropyLoss()
    bf16 = device == "cuda"
    loader = run.datamodule.train_dataloader()
    times = []
    for _ in range(run.cfg.trainer.max_epochs):
        model.train()
        _sync()
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        _sync()
        times.append(time.perf_counter() - start)
    return times, len(run.datamodule.sets["train"])


def _per_second(times: list[float], images: int) -> float:
    return images / statistics.median(times[1:] or times)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({len(os.sched_getaffinity(0))} cores)"


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--per-class", type=int, default=427, help="shapes images per class (24 classes; 427: ~10k)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ranks", type=int, nargs="*", default=None,
                        help="world sizes to time labline at (default: 1 2 when 2 GPUs are present, else none)")
    parser.add_argument("--tiny", action="store_true", help="a two-stage, 8-wide ResNet (smoke tests)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides, on every side")
    parser.add_argument("--record", action="store_true", help="append the rows to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.ranks is None:
        args.ranks = [1, 2] if args.device == "cuda" and torch.cuda.device_count() >= 2 else []
    os.environ.setdefault("LABLINE_PROJECT_ROOT", tempfile.mkdtemp(prefix="labline-bench-"))
    today, where, rows = time.strftime("%Y-%m-%d"), device_name(args.device), []
    model = " ".join(f"`{o}`" for o in args.set) or ("tiny ResNet" if args.tiny else "ResNet [32, 64, 128]")
    with tempfile.TemporaryDirectory() as tmp:
        lab, images = labline_epochs(overrides(args), Path(tmp) / "labline")
        raw, _ = raw_epochs(overrides(args), Path(tmp) / "raw", args.device)
        lab_ips, raw_ips = _per_second(lab, images), _per_second(raw, images)
        rows.append(f"| {today} | {where} | throughput, 1 device | {model} | {args.batch_size} | {args.epochs} | "
                    f"raw {raw_ips:.0f} img/s, labline {lab_ips:.0f} img/s: {lab_ips / raw_ips:.3f}x |")
        base = None
        for ranks in args.ranks:
            times, _ = labline_epochs(overrides(args, ranks), Path(tmp) / f"ranks{ranks}")
            epoch = statistics.median(times[1:] or times)
            base = base or epoch
            label = "correctness run (CPU, gloo)" if args.device == "cpu" else "DDP scaling"
            rows.append(f"| {today} | {where} | {label}, {ranks} rank(s) | {model} | {args.batch_size} per rank | "
                        f"{args.epochs} | epoch {epoch * 1e3:.0f} ms ({base / epoch:.2f}x of 1 rank) |")
    for row in rows:
        print(row)
    if args.record:
        _record(ROOT / "docs" / "benchmarks.md", rows)
    return rows


def _record(path: Path, rows: list[str]) -> None:
    header = (f"{SECTION}\n\n| date | device | what | model | batch | epochs | result |\n" + "| --- " * 7 + "|\n")
    text = path.read_text()
    if SECTION not in text:
        text = text.rstrip() + "\n\n" + header
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    end = len(text) if end < 0 else end
    section = text[start:end].rstrip() + "\n" + "\n".join(rows) + "\n"
    path.write_text(text[:start] + section + text[end:])


if __name__ == "__main__":
    main()
