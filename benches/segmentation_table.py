"""The U-Net vs FCN table of docs/segmentation.md, read back from the project's MLflow store (no training here).

The runs are made by the command in docs/segmentation.md (`labline train -m
experiment=segmentation_scenes,segmentation_scenes_fcn seed=0,1,2 ... logger.experiment_name=segmentation`).
Prints, per backbone, mean +/- sample std over the seeds of the test mIoU, pixel accuracy, mean Dice and the
background IoU (how well object boundaries are found, whatever the class), and the best and last epoch
(1-based) of each seed.
Usage: python benches/segmentation_table.py [experiment name, default segmentation]
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

from mlflow.tracking import MlflowClient

from labline.tracking.store import tracking_uri

COLUMNS = {"test mIoU": "test/miou", "test pixel accuracy": "test/pixel_acc", "test Dice": "test/dice",
           "test background IoU": "test/iou_background"}


def _fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def table(client: MlflowClient, experiment: str) -> None:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=1000) if found else []
    groups: dict[str, list] = defaultdict(list)
    for run in runs:
        groups[run.data.params["backbone._target_"].rsplit(".", 1)[-1]].append(run)
    print(f"| backbone | seeds | {' | '.join(COLUMNS)} | best / last epoch per seed |")
    print("| --- | --- |" + " --- |" * (len(COLUMNS) + 1))
    for name, members in sorted(groups.items(), reverse=True):
        seeds = ",".join(sorted(r.data.tags["seed"] for r in members))
        cells = [_fmt([r.data.metrics[key] for r in members]) for key in COLUMNS.values()]
        epochs = ", ".join(f"{int(r.data.tags['best_epoch']) + 1}/{int(r.data.tags['stopped_epoch']) + 1}" for r in members)
        print(f"| {name} | {seeds} | {' | '.join(cells)} | {epochs} |")


if __name__ == "__main__":
    table(MlflowClient(tracking_uri()), sys.argv[1] if len(sys.argv) > 1 else "segmentation")
