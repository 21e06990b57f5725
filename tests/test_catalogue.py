"""`labline runs`: the ids other commands need, newest first, filtered, each with what made it."""

from __future__ import annotations

import pytest

from labline.cli import main
from labline.core.errors import ConfigError
from labline.studies.catalogue import list_runs
from labline.tracking.lifecycle import open_run
from labline.tracking.store import open_store
from testroot import ROOT


def _run(name: str, tags: dict[str, str], metrics: dict[str, float], experiment: str = "cat") -> str:
    with open_run(open_store(), experiment, name, tags=tags, config={"task": {"_target_": "labline.models.x.MyTask"}},
                  root=ROOT) as run:
        run.log_metrics(metrics)
    return run.run_id


def test_runs_are_listed_newest_first_with_their_kind_task_and_headline() -> None:
    old = _run("plain", {"dataset": "digits"}, {"test/acc": 0.9})
    trial = _run("t0", {"optuna_trial": "0", "dataset": "digits"}, {})
    variant = _run("v", {"ablation_variant": "no_dropout", "dataset": "shapes"}, {"test/acc": 0.8})
    rows = list_runs(open_store())
    assert [r.run_id for r in rows] == [variant, trial, old]
    assert [r.kind for r in rows] == ["variant no_dropout", "trial 0", "training"]
    assert rows[2].task == "MyTask" and (rows[2].metric, rows[2].value) == ("test/acc", 0.9)
    assert rows[1].value is None, "an untested trial without a best epoch has no headline"


def test_filters_and_limit() -> None:
    digits = _run("a", {"dataset": "digits"}, {"test/acc": 0.9})
    _run("b", {"dataset": "shapes"}, {"test/acc": 0.7})
    _run("c", {"dataset": "digits"}, {"test/acc": 0.5}, experiment="other")
    assert [r.run_id for r in list_runs(open_store(), experiment="cat", tags=["dataset=digits"])] == [digits]
    assert len(list_runs(open_store(), filter_string="metrics.`test/acc` > 0.6")) == 2
    assert len(list_runs(open_store(), limit=1)) == 1
    assert list_runs(open_store(), status="failed") == []


@pytest.mark.parametrize(("kwargs", "key"), [({"status": "done"}, "--status"), ({"tags": ["dataset"]}, "--tag"),
                                             ({"experiment": "nope"}, "--experiment"), ({"limit": 0}, "--limit"),
                                             ({"filter_string": "metrics.x >>> 1"}, "filter")])
def test_bad_filters_are_one_line_errors(kwargs: dict, key: str) -> None:
    _run("a", {}, {})
    with pytest.raises(ConfigError) as err:
        list_runs(open_store(), **kwargs)
    assert err.value.key == key and "\n" not in str(err.value)


def test_ids_print_one_per_line_for_the_shell(capsys) -> None:
    first, second = _run("a", {}, {}), _run("b", {}, {})
    main(["runs", "--ids"])
    assert capsys.readouterr().out.split() == [second, first]
