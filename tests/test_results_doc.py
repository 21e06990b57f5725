"""Results tables: cells filled from metrics files (mean ± sample std over seeds), missing and stale rows said,
only the marked block rewritten, and the committed tables equal to a rendering of the committed metrics files."""

from __future__ import annotations

import json
import statistics

import pytest

from labline.core.errors import ConfigError
from labline.reporting.results_doc import BLOCK, STALE, format_cell, render_all, render_file, render_table
from labline.studies.ablation.spec import load as load_ablation
from labline.studies.results import all_rows, load_spec, measure, measured, row_spec
from testroot import ROOT

SPEC = {"rows": {"a": {"runs": {"x": []}}, "b": {"runs": {"y": []}}},
        "tables": {"t": {"file": "doc.md", "rows": [
            {"row": "a", "label": "A", "reference": "paper 0.9", "show": "{x.acc} / {x.auc:.1%}", "budget": "2 epochs"},
            {"row": "b", "label": "B", "show": "{y.acc}"}]}}}
RECORD = {"values": {"x": {"acc": [0.9, 0.8, 0.85], "auc": [0.5]}}, "wall_s": 75.0, "commit": "0123456789abcdef",
          "date": "2026-12-02"}


def test_a_cell_is_the_mean_and_sample_std_over_seeds_in_the_given_format() -> None:
    values = RECORD["values"]
    expected = f"{statistics.fmean([0.9, 0.8, 0.85]):.3f} ± {statistics.stdev([0.9, 0.8, 0.85]):.3f}"
    assert format_cell("{x.acc} / {x.auc:.1%}", values) == f"{expected} / 50.0%"
    assert format_cell("{x.f1}", values) == "(no x.f1)", "a field the row did not record names itself"


def test_a_table_says_which_rows_are_unmeasured_and_which_are_stale() -> None:
    fresh = render_table(SPEC["tables"]["t"], {"a": RECORD, "b": None}, set())
    lines = fresh.splitlines()
    assert lines[0].startswith("| experiment | measured |") and len(lines) == 4
    assert "| A | 0.850 ± 0.050 / 50.0% | 2 epochs | 1.2 min | `0123456`, 2026-12-02 | paper 0.9 |" == lines[2]
    assert "not measured yet: `make results` (row `b`)" in lines[3]
    stale = render_table(SPEC["tables"]["t"], {"a": RECORD, "b": None}, {"a"})
    assert f"2026-12-02 {STALE}" in stale.splitlines()[2] and STALE not in stale.splitlines()[3]
    on = render_table(SPEC["tables"]["t"], {"a": {**RECORD, "machine": {"cpu": "x", "cpu_capability": "AVX2"}}, "b": None},
                      {"a"})
    assert f"`0123456`, 2026-12-02, AVX2 {STALE} |" in on.splitlines()[2], "the CPU kernels a row was measured with"


def test_an_ablation_table_is_the_studys_own_table_with_its_provenance() -> None:
    table = {"ablation": "abl", "budget": "2 epochs"}
    record = {**RECORD, "table": "**Ablation `x`**\n\n| variant |\n", "command": "labline ablate ablation=x"}
    text = render_table(table, {"abl": record}, set())
    assert text.startswith(record["table"])
    assert text.endswith("(row `abl`: `labline ablate ablation=x`; 2 epochs): 1.2 min, `0123456`, 2026-12-02.\n")
    assert STALE in render_table(table, {"abl": record}, {"abl"})
    assert render_table(table, {"abl": None}, set()) == "Not measured yet: `make results` (row `abl`; budget: 2 epochs).\n"
    spec = {"rows": {"abl": {"ablation": []}}, "tables": {"abl": {**table, "files": ["a.md", "b.md"]}}}
    out = render_file("<!-- results:abl -->\n<!-- /results -->\n", spec, {"abl": record}, set(), "b.md")
    assert record["table"] in out, "the same block renders in every file the table names"


def test_only_the_marked_block_is_rewritten() -> None:
    text = "intro\n<!-- results:t -->\nold table\n<!-- /results -->\noutro\n"
    out = render_file(text, SPEC, {"a": RECORD, "b": None}, set(), "doc.md")
    assert out.startswith("intro\n<!-- results:t -->\n| experiment") and out.endswith("<!-- /results -->\noutro\n")
    assert "old table" not in out
    with pytest.raises(ConfigError, match="results block 'nope'"):
        render_file("<!-- results:nope -->\n<!-- /results -->\n", SPEC, {}, set(), "doc.md")


def test_every_row_has_a_dvc_stage_that_measures_it() -> None:
    """`rows` are the foreach of pipelines/results/dvc.yaml's `row` stage; a `compared` row needs a stage of its own
    (a row put under `compared` by mistake would be measured by nothing and never shown stale)."""
    import yaml

    spec = load_spec(ROOT)
    stages = yaml.safe_load((ROOT / "pipelines" / "results" / "dvc.yaml").read_text())["stages"]
    assert stages["row"]["foreach"] == "${rows}" and stages["row"]["do"]["cmd"] == "labline measure ${key}"
    for name in spec["compared"]:
        assert name in stages and f"labline measure {name}" in stages[name]["cmd"], f"compared row {name} has no stage"


def test_every_row_of_the_spec_composes_and_every_table_row_exists() -> None:
    spec = load_spec(ROOT)
    for name in all_rows(spec):
        row = row_spec(spec, name)
        assert [bool(row.runs), bool(row.ablation), bool(row.compare)].count(True) == 1, "runs, an ablation or a comparison"
        assert all(isinstance(o, str) for overrides in row.runs.values() for o in overrides)
        assert all(m in row.runs for e in row.ensembles.values() for m in e["members"])
        if row.ablation:  # the words `labline ablate` takes, the training overrides kept for every run
            study, parent = load_ablation(row.ablation)
            assert parent is None and "threads=1" in study.overrides
    for table in spec["tables"].values():
        rows = [table["ablation"]] if "ablation" in table else [entry["row"] for entry in table["rows"]]
        assert rows and all(r in all_rows(spec) for r in rows)
    with pytest.raises(ConfigError, match="unknown results row 'nope'"):
        row_spec(spec, "nope")


def test_the_committed_tables_show_the_committed_metrics_files() -> None:
    """Staleness aside (DVC's status, checked end to end), each committed table equals its rendering."""
    spec = load_spec(ROOT)
    records = measured(ROOT, spec)
    assert any(records.values()), "some rows are measured"
    for path, text in render_all(ROOT, spec, records, set()).items():
        committed = [m["body"].replace(f" {STALE}", "") for m in BLOCK.finditer(path.read_text())]
        assert committed and committed == [m["body"] for m in BLOCK.finditer(text)], f"{path}: run `labline docs`"


def test_a_compared_row_reads_every_seed_of_another_pipelines_comparison(tmp_path) -> None:
    """The distillation row: its trainings ran in pipelines/distill's stages; the row keeps each seed's test
    accuracy and the model's size from that pipeline's comparison, with no wall time of its own."""
    results = tmp_path / "pipelines" / "results"
    results.mkdir(parents=True)
    (results / "results.yaml").write_text("compared:\n  study:\n    compare: study/compare.json\n")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "compare.json").write_text(json.dumps({
        "teacher": {"per_seed": {"0": 0.97}, "params": 100, "flops": 2000, "run_ids": {"0": "t0"}},
        "student": {"per_seed": {"0": 0.9, "1": 0.8}, "params": 10, "flops": 200, "run_ids": {"0": "s0", "1": "s1"}},
        "distillation_gain": 0.01}))
    record = json.loads(measure(tmp_path, "study").read_text())
    assert record["values"] == {"teacher": {"test/acc": [0.97], "params": [100.0], "flops": [2000.0]},
                                "student": {"test/acc": [0.9, 0.8], "params": [10.0], "flops": [200.0]}}
    assert record["run_ids"] == {"teacher": ["t0"], "student": ["s0", "s1"]} and record["seeds"] == [0, 1]
    assert record["wall_s"] is None and record["source"] == "study/compare.json"
    table = {"rows": [{"row": "study", "label": "S", "show": "{student.test/acc}"}]}
    assert "| S | 0.850 ± 0.071 |  | – |" in render_table(table, {"study": record}, set())
