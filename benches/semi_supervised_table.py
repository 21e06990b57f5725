"""The tables of docs/semi_supervised.md, read back from the project's MLflow store (no training here).

The runs are made by the commands in docs/semi_supervised.md (`labline train -m experiment=semi_* seed=0,1,2
data.labels_per_class=5,10 logger.experiment_name=semi_supervised ...` and `labline ablate ablation=dino_parts`).
Prints, per experiment and labels per class, mean +/- sample std of the test accuracy over the seeds, the number of
runs and whether they shared their labeled sets (labels_hash per seed); then the DINO runs' last-epoch collapse
diagnostics. Usage: python benches/semi_supervised_table.py [experiment name, default semi_supervised]
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

from mlflow.tracking import MlflowClient

from labline.tracking.store import tracking_uri


def _fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def accuracy_table(client: MlflowClient, experiment: str) -> None:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=1000) if found else []
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for run in runs:
        groups[(run.info.run_name, run.data.tags.get("labeled_count", "all"))].append(run)
    print("| experiment | labeled | runs | test accuracy | labels_hash per seed |")
    print("| --- | --- | --- | --- | --- |")
    for (name, labeled), members in sorted(groups.items()):
        members.sort(key=lambda r: int(r.data.tags["seed"]))
        hashes = ", ".join(f"{r.data.tags['seed']}:{r.data.tags.get('labels_hash', '-')[:6]}" for r in members)
        print(f"| {name} | {labeled} | {len(members)} | {_fmt([r.data.metrics['test/acc'] for r in members])} | {hashes} |")


def collapse_table(client: MlflowClient) -> None:
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.ablation = 'dino_parts' and attributes.status = 'FINISHED'", max_results=1000)
    print("\n| variant | seed | test k-NN | test linear probe | last-epoch teacher entropy | last-epoch KL(teacher, student) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in sorted((r for r in runs if "ablation_variant" in r.data.tags), key=lambda r: r.data.tags["ablation_variant"]):
        m = run.data.metrics
        print(f"| {run.data.tags['ablation_variant']} | {run.data.tags['seed']} | {m['test/knn_acc']:.3f} | "
              f"{m['test/linear_probe_acc']:.3f} | {m['train/teacher_entropy']:.3f} | {m['train/teacher_student_kl']:.3f} |")


if __name__ == "__main__":
    client = MlflowClient(tracking_uri())
    accuracy_table(client, sys.argv[1] if len(sys.argv) > 1 else "semi_supervised")
    collapse_table(client)
