"""The DINO collapse table of docs/semi_supervised.md, read back from the project's MLflow store (no training here).

The runs are made by `labline ablate ablation=dino_parts` (docs/semi_supervised.md). Prints each variant's test
k-NN and linear-probe accuracy and its last-epoch collapse diagnostics (teacher entropy, KL(teacher, student)); the
accuracy table of the semi-supervised methods is the `semi_supervised` results row (pipelines/results).
Usage: python benches/semi_supervised_table.py
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from labline.tracking.store import tracking_uri


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
    collapse_table(MlflowClient(tracking_uri()))
