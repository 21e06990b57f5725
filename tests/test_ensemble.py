"""Ensembles: the four combination rules on hand-made probabilities, and members checked before combining."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from labline.ensemble import combine, run_ensemble
from labline.errors import ConfigError
from labline.tracking.store import ensure_experiment, tracking_uri

# Three members, two samples, three classes. Sample 0: two members vote class 0 with little margin, one is sure of
# class 1 (soft voting picks 1, max voting 0). Sample 1: every member picks class 2.
PROBS = np.array([[[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]],
                  [[0.5, 0.4, 0.1], [0.2, 0.1, 0.7]],
                  [[0.0, 1.0, 0.0], [0.3, 0.0, 0.7]]])


def test_max_voting_follows_the_majority_and_breaks_ties_by_probability() -> None:
    scores = combine(PROBS, "vote")
    assert scores.argmax(1).tolist() == [0, 2]
    assert np.allclose(scores[0], (np.array([2, 1, 0]) + PROBS[:, 0].mean(0)) / 4)
    tie = combine(PROBS[1:], "vote")  # one vote each for classes 0 and 1 on sample 0: the higher mean probability wins
    assert tie[0].argmax() == 1


def test_averaging_and_weighted_averaging() -> None:
    assert np.allclose(combine(PROBS, "average"), PROBS.mean(0))
    assert combine(PROBS, "average").argmax(1).tolist() == [1, 2]
    assert np.allclose(combine(PROBS, "weighted", np.array([2.0, 2.0, 0.0])), PROBS[0] * 0.5 + PROBS[1] * 0.5)
    weighted = combine(PROBS, "weighted", np.array([0.9, 0.8, 0.7]))
    assert np.allclose(weighted, (0.9 * PROBS[0] + 0.8 * PROBS[1] + 0.7 * PROBS[2]) / 2.4)
    with pytest.raises(ConfigError, match="one non-negative weight per member"):
        combine(PROBS, "weighted", np.array([1.0, -1.0, 1.0]))


def test_rank_averaging_ignores_each_members_scale() -> None:
    """A member that squashes its scores counts as much as one that spreads them: only their order matters."""
    sure = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    squashed = np.array([[0.51, 0.49], [0.52, 0.48], [0.50, 0.50]])
    scores = combine(np.stack([sure, squashed]), "rank")
    # class-0 ranks over the 3 samples: sure (3, 2, 1), squashed (2, 3, 1) -> mean / 3 = (5/6, 5/6, 1/3);
    # class-1 ranks: sure (1, 2, 3), squashed (2, 1, 3) -> (1/2, 1/2, 1); each row then sums to 1.
    expected = np.array([[5 / 6, 1 / 2], [5 / 6, 1 / 2], [1 / 3, 1.0]])
    assert np.allclose(scores, expected / expected.sum(1, keepdims=True))
    assert np.allclose(combine(np.stack([sure, sure ** 3]), "rank"), combine(np.stack([sure, sure]), "rank"))


@pytest.mark.parametrize("method", ["vote", "average", "weighted", "rank"])
def test_every_rule_gives_rows_summing_to_one(method: str) -> None:
    assert np.allclose(combine(PROBS, method, np.ones(3)).sum(1), 1.0)


def _finished_run(tmp: Path, probs: np.ndarray, split_hash: str, val_acc: float) -> str:
    """A finished run as labline records it: split hash tag, validation metric, predictions/test.npz."""
    _, experiment_id = ensure_experiment("unit")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"split_hash": split_hash, "dataset": "toy"})
        mlflow.log_metric("val/acc", val_acc)
        path = tmp / run.info.run_id / "test.npz"
        path.parent.mkdir()
        np.savez(path, probs=probs, targets=np.array([0, 2]), index=np.array([10, 11]))
        mlflow.log_artifact(str(path), "predictions")
    return run.info.run_id


def test_ensemble_run_links_its_members(tmp_path) -> None:
    ids = [_finished_run(tmp_path, PROBS[i], "abc", acc) for i, acc in enumerate((0.9, 0.8, 0.7))]
    result = run_ensemble(ids, None, "weighted", "val/acc", tmp_path)
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.data.tags["ensemble_members"] == ",".join(ids) and run.data.tags["split_hash"] == "abc"
    assert run.data.params["method"] == "weighted" and run.data.params["members"] == ",".join(ids)
    assert run.data.params["weights"] == "[0.9, 0.8, 0.7]"
    # the confident third member outweighs the two others on sample 0: an ensemble can lose to its best member
    assert run.data.metrics["test_accuracy"] == 0.5 and run.data.metrics["members_best_test_accuracy"] == 1.0
    assert (tmp_path / "outputs").exists()
    found = run_ensemble([], "tags.dataset = 'toy'", "average", None, tmp_path)
    assert MlflowClient(tracking_uri()).get_run(found["run_id"]).data.tags["ensemble_members"].split(",") == ids


def test_members_tested_on_different_splits_are_refused(tmp_path) -> None:
    first, second = _finished_run(tmp_path, PROBS[0], "abc", 0.9), _finished_run(tmp_path, PROBS[1], "xyz", 0.9)
    with pytest.raises(ConfigError, match=f"runs {first} and {second} were tested on different splits") as err:
        run_ensemble([first, second], None, "average", None, tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="at least 2 runs"):
        run_ensemble([first], None, "average", None, tmp_path)
    with pytest.raises(ConfigError, match="--metric"):
        run_ensemble([first, second], None, "weighted", None, tmp_path)
