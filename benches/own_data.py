"""The table of docs/own_data.md: the researcher's own data through ``labline train`` with the defaults, no tuning.

Writes scikit-learn's wine and breast_cancer as CSV files, the bundled digits as a folder of PNG images (and as
an .npz file, for the figure the images should reproduce), then trains each row with the default config
(30 epochs, seed 0, the default hold-out split and preprocessing) and prints a Markdown table of the test
accuracies read from each run's ``metrics.json``. Run it from the project root:

    python benches/own_data.py [--work own_data_bench] [--threads 1] [--rows wine,breast_cancer,digits,sequence]

The published table is the ``own_data`` row of pipelines/results (its stage calls this script with
``--write-only``, then ``labline measure own_data`` trains the same words).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

ROWS = {
    "wine": [("wine.csv", "MLP", ["data=csv", "data.source.path={work}/wine.csv", "data.source.target=target",
                                  "backbone=mlp"]),
             ("wine.csv", "logistic regression", ["data=csv", "data.source.path={work}/wine.csv",
                                                  "data.source.target=target", "task=sklearn_logreg"])],
    "breast_cancer": [("breast_cancer.csv", "MLP", ["data=csv", "data.source.path={work}/breast_cancer.csv",
                                                    "data.source.target=target", "backbone=mlp"]),
                      ("breast_cancer.csv", "logistic regression", ["data=csv",
                                                                    "data.source.path={work}/breast_cancer.csv",
                                                                    "data.source.target=target", "task=sklearn_logreg"])],
    "digits": [("digits.npz", "CNN", ["data=npz", "data.source.path={work}/digits.npz"]),
               ("digits_png/ (PNG folder)", "CNN", ["data=image_folder", "data.source.root={work}/digits_png",
                                                    "data.source.size=8"])],
    "sequence": [("digits_seq (64 steps)", backbone, ["data=digits_seq", f"backbone={backbone}"])
                 for backbone in ("conv1d", "tcn", "gru")],
}


def write_files(work: Path) -> None:
    """The files a researcher would bring: two CSV tables, one PNG per digit in a folder per class, one .npz."""
    work.mkdir(parents=True, exist_ok=True)
    for name, loader in (("wine", load_wine), ("breast_cancer", load_breast_cancer)):
        loader(as_frame=True).frame.to_csv(work / f"{name}.csv", index=False)
    digits = load_digits()
    np.savez(work / "digits.npz", x=digits.images[:, None].astype(np.float32), y=digits.target)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        path = work / "digits_png" / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 15).astype(np.uint8)).save(path)  # 0..16 -> 0..240, exact in 8 bits


def train(words: list[str], out: Path, threads: int) -> float:
    command = [str(Path(sys.executable).parent / "labline"), "train", *words, f"threads={threads}",
               "logger.experiment_name=own_data", f"hydra.run.dir={out}"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text())["test/acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="own_data_bench", help="folder for the written files and the runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--write-only", action="store_true",
                        help="only write the files (the own_data stage of pipelines/results trains them itself)")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    write_files(work)
    if args.write_only:
        return
    print("| data | model | test accuracy | command (`labline train ...`) |\n| --- | --- | --- | --- |")
    for row in args.rows.split(","):
        for i, (data, model, words) in enumerate(ROWS[row]):
            words = [w.format(work=args.work) for w in words]
            accuracy = train(words, work / "runs" / f"{row}_{i}", args.threads)
            print(f"| {data} | {model} | {accuracy:.3f} | `{' '.join(words)}` |", flush=True)


if __name__ == "__main__":
    main()
