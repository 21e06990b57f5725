"""`labline ablate` and `labline report` for real in a project copy: 2 components x 2 seeds of a tiny MLP."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli
from scipy import stats

pytestmark = pytest.mark.e2e

VARIANTS = ["full", "no_dropout", "no_batch_norm"]


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def _search(project: Path, query: str) -> list:
    client = _client(project)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], query)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _seeds(project: Path) -> list[str]:
    """The study's seeds as its runs record them: 2, or 3 once test_more_seeds has extended it (tests share the
    copy and may run in any order, so none assumes which)."""
    seeds = sorted({r.data.tags["seed"] for r in _search(project, "tags.ablation = 'tiny'") if "ablation_variant" in r.data.tags})
    assert seeds in (["0", "1"], ["0", "1", "2"]), seeds
    return seeds


@pytest.fixture(scope="module")
def study(project: Path) -> str:
    result = run_cli(project, "labline", "ablate", "ablation=tiny", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 runs planned, 0 already finished, 6 to run" in result.stdout
    return result.stdout


def test_table_has_one_row_per_variant_with_the_statistics_of_its_runs(project: Path, study: str) -> None:
    folder = project / "reports" / "ablation" / "tiny"
    rows = {r["variant"]: r for r in _csv(folder / "table.csv")}
    runs, seeds = _csv(folder / "runs.csv"), _seeds(project)
    assert list(rows) == VARIANTS and len(runs) == len(VARIANTS) * len(seeds)
    value = {(r["variant"], r["seed"]): float(r["value"]) for r in runs}
    for run in [r for r in _search(project, "tags.ablation = 'tiny'") if "ablation_variant" in r.data.tags]:
        assert value[(run.data.tags["ablation_variant"], run.data.tags["seed"])] == run.data.metrics["test/acc"]
    full = [value[("full", s)] for s in seeds]
    for name in VARIANTS:
        own = [value[(name, s)] for s in seeds]
        row = rows[name]
        assert int(row["n"]) == len(seeds)
        assert float(row["mean"]) == pytest.approx(statistics.mean(own))
        assert float(row["std"]) == pytest.approx(statistics.stdev(own))
        if name == "full":
            assert math.isnan(float(row["diff"])) and math.isnan(float(row["p_value"]))
            continue
        assert float(row["diff"]) == pytest.approx(statistics.mean(own) - statistics.mean(full))
        diffs = [a - b for a, b in zip(own, full, strict=True)]
        expected = math.nan if len(set(diffs)) == 1 else stats.ttest_rel(own, full).pvalue  # no spread: t undefined
        got = float(row["p_value"])
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
    components = _csv(folder / "components.csv")
    assert sorted(c["component"] for c in components) == ["batch_norm", "dropout"]
    drop = {c["component"]: float(c["effect"]) for c in components}
    assert drop["dropout"] == pytest.approx(float(rows["full"]["mean"]) - float(rows["no_dropout"]["mean"]))
    assert components[0]["rank"] == "1" and drop[components[0]["component"]] >= drop[components[1]["component"]]
    text = (folder / "table.md").read_text()
    assert "paired t-test (scipy.stats.ttest_rel)" in text
    assert text in study or len(seeds) == 3, "the table ablate printed"  # the extension's own is checked there
    assert (folder / "bars.png").stat().st_size > 1000 and (folder / "metrics.json").exists()


def test_every_run_nests_under_one_parent_that_holds_the_table(project: Path, study: str) -> None:
    (parent,) = _search(project, "tags.role = 'ablation'")
    assert parent.info.status == "FINISHED" and parent.data.tags["ablation"] == "tiny"
    children, seeds = _search(project, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"), _seeds(project)
    assert len(children) == len(VARIANTS) * len(seeds) and all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["config_hash"] for c in children}) == len(children)
    assert sorted(c.data.tags["ablation_variant"] for c in children) == sorted(VARIANTS * len(seeds))
    artifacts = {a.path for a in _client(project).list_artifacts(parent.info.run_id, "ablation")}
    assert {"ablation/table.md", "ablation/table.csv", "ablation/bars.png", "ablation/plan.json"} <= artifacts
    assert parent.data.metrics["ablation/full/mean"] > 0.3


def test_report_rebuilds_the_same_table_from_mlflow_alone(project: Path, study: str) -> None:
    folder = project / "reports" / "ablation" / "tiny"
    runs = {r.info.run_id for r in _search(project, "")}
    before = {name: (folder / name).read_text() for name in ("table.md", "table.csv", "components.csv", "runs.csv")}
    for path in folder.iterdir():
        path.unlink()
    by_name = run_cli(project, "labline", "report", "ablation=tiny")
    assert by_name.returncode == 0, by_name.stderr[-3000:]
    assert {name: (folder / name).read_text() for name in before} == before
    (parent,) = _search(project, "tags.role = 'ablation'")
    by_id = run_cli(project, "labline", "report", f"parent={parent.info.run_id}")
    assert by_id.returncode == 0 and before["table.md"] in by_id.stdout
    assert {r.info.run_id for r in _search(project, "")} == runs, "report trains nothing"


@pytest.mark.parametrize(("words", "needle"), [
    (["ablation=tiny", "components=[nope]"], "'nope' is not a component"),
    (["ablation=nope"], "is not an option of group 'ablation'"),
    (["ablation=tiny", "components.dropout=[backbone.dropout=2]"], "variant no_dropout: backbone.dropout"),
])
def test_user_errors_exit_2_with_one_line_before_any_run(project: Path, study: str, words: list[str], needle: str) -> None:
    before = len(_search(project, ""))
    result = run_cli(project, "labline", "ablate", *words)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr[-2000:]
    assert len(_search(project, "")) == before


def test_more_seeds_extend_the_study_and_only_train_the_new_runs(project: Path, study: str) -> None:
    result = run_cli(project, "labline", "ablate", "ablation=tiny", "seeds=3", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "9 runs planned, 6 already finished, 3 to run" in result.stdout
    (parent,) = _search(project, "tags.role = 'ablation'")
    assert len(_search(project, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")) == 9
    rows = _csv(project / "reports" / "ablation" / "tiny" / "table.csv")
    assert [int(r["n"]) for r in rows] == [3, 3, 3]
    assert (project / "reports" / "ablation" / "tiny" / "table.md").read_text() in result.stdout
