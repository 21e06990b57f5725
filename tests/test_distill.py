"""Knowledge distillation: the loss terms against hand computations, the teacher rebuilt from its checkpoint,
ensembles, user errors, and the committed params files of pipelines/distill."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from labline.core.config import compose_config
from labline.core.errors import ConfigError
from labline.losses.distill import (
    DistillationLoss,
    NetOutputs,
    attention_loss,
    attention_map,
    feature_loss,
    parse_terms,
    projection,
    soft_target_loss,
    soft_targets,
)
from labline.models.distill import Classifier, DistillationTask, load_classifier
from labline.models.task import TaskContext, build_task
from labline.runs.checkpoints import resolve_checkpoint
from testroot import CONF, ROOT

SHAPE, CLASSES = (1, 8, 8), 10
FAST = ["threads=1", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger.experiment_name=tests"]
TEACHER = ["experiment=distill_teacher", "backbone.channels=[8,16,32]"]
STUDENT = ["experiment=distill_student", "backbone.channels=[4,8]"]


# --- loss terms -------------------------------------------------------------------------------------------------

def test_soft_term_matches_a_hand_computation_with_the_t_squared_factor() -> None:
    z_t, z_s, temp = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 2.0
    p = [math.exp(v / temp) / sum(math.exp(u / temp) for u in z_t) for v in z_t]
    q = [math.exp(v / temp) / sum(math.exp(u / temp) for u in z_s) for v in z_s]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    target = soft_targets([torch.tensor([z_t])], temp)
    assert torch.allclose(target, torch.tensor([p]))
    assert soft_target_loss(torch.tensor([z_s]), target, temp).item() == pytest.approx(temp**2 * kl, rel=1e-6)
    # a per-sample mean: a second sample whose logits equal the teacher's adds 0 and halves the mean
    batch = soft_target_loss(torch.tensor([z_s, z_t]), soft_targets([torch.tensor([z_t, z_t])], temp), temp)
    assert batch.item() == pytest.approx(temp**2 * kl / 2, rel=1e-6)


def test_identical_teacher_and_student_logits_give_a_zero_soft_term() -> None:
    logits = torch.randn(5, CLASSES)
    assert soft_target_loss(logits, soft_targets([logits], 4.0), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_feature_term_goes_through_a_learned_projection_when_widths_differ() -> None:
    assert isinstance(projection((2, 16), (2, 16)), torch.nn.Identity)
    assert isinstance(projection((2, 4, 8, 8), (2, 6, 4, 4)), torch.nn.Conv2d)
    with pytest.raises(ConfigError, match="task.loss_terms.feature"):
        projection((2, 4), (2, 6, 4, 4))
    spec = parse_terms({"feature": {"weight": 1.0}})
    loss = DistillationLoss(spec, student_feature=(2, 4), teacher_features=[(2, 6)])
    (proj,) = loss.projections
    assert isinstance(proj, torch.nn.Linear) and (proj.in_features, proj.out_features) == (4, 6)
    f_s, f_t = torch.randn(3, 4), torch.randn(3, 6)
    terms = loss(NetOutputs(torch.zeros(3, 2), f_s), [NetOutputs(torch.zeros(3, 2), f_t)])
    by_hand = sum(((proj(f_s)[i] - f_t[i]) ** 2).sum() for i in range(3)) / 3
    assert set(terms) == {"feature"} and terms["feature"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    terms["feature"].backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0, "the projection is trained"
    assert feature_loss(f_t, f_t).item() == 0.0


def test_attention_maps_are_normalised_channel_sums_matched_across_sizes() -> None:
    a = torch.rand(2, 3, 4, 4)
    assert torch.allclose(attention_map(a), (a**2).sum(1, keepdim=True))
    # only where a layer is active matters, not its width or scale: 2x the channels at 3x the amplitude match
    assert attention_loss(3 * a.repeat(1, 2, 1, 1), a).item() == pytest.approx(0.0, abs=1e-6)
    # a constant student map at half the resolution is resized to the teacher's and matches a constant teacher
    assert attention_loss(torch.ones(2, 5, 2, 2), torch.ones(2, 3, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)
    # disjoint unit maps q_s = [1, 0], q_t = [0, 1]: ||q_s - q_t||^2 = 2
    s, t = torch.tensor([[[[1.0, 0.0]]]]), torch.tensor([[[[0.0, 5.0]]]])
    assert attention_loss(s, t).item() == pytest.approx(2.0)


def test_weight_zero_disables_a_term_and_the_total_is_the_weighted_sum() -> None:
    spec = parse_terms({"soft": {"weight": 0.0, "temperature": 3.0}, "hard": {"weight": 0.5},
                        "attention": {"weight": 2.0, "teacher_layers": ["a"], "student_layers": ["b"]}})
    assert spec.weights == {"hard": 0.5, "attention": 2.0} and spec.taps("student") == ["b"]
    loss = DistillationLoss(spec)
    maps_s, maps_t = [torch.rand(2, 3, 4, 4)], [torch.rand(2, 5, 4, 4)]
    hard = torch.tensor(1.5)
    terms = loss(NetOutputs(torch.randn(2, 4), None, maps_s), [NetOutputs(torch.randn(2, 4), None, maps_t)], hard)
    assert set(terms) == {"hard", "attention"}
    assert loss.total(terms).item() == pytest.approx(0.5 * 1.5 + 2.0 * attention_loss(maps_s[0], maps_t[0]).item(), rel=1e-6)
    with pytest.raises(ConfigError, match="every term has weight 0"):
        parse_terms({"soft": {"weight": 0}, "hard": {"weight": 0}})
    with pytest.raises(ConfigError, match=r"task.loss_terms.dark: is not a distillation loss term"):
        parse_terms({"dark": {"weight": 1}})
    with pytest.raises(ConfigError, match="task.loss_terms.soft.temperature"):
        parse_terms({"soft": {"weight": 1, "temperature": 0}})


# --- teachers -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> dict:
    """One short real teacher run, tracked in a store of its own (module fixtures start before the per-test store)."""
    from labline.runs.lightning_run import train_and_test

    store, out = tmp_path_factory.mktemp("teacher_store"), tmp_path_factory.mktemp("teacher")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LABLINE_PROJECT_ROOT", str(store))
        result = train_and_test(compose_config([*TEACHER, *FAST], conf=CONF), out, ROOT)
    return {"checkpoint": out / "checkpoints" / "model.ckpt", "run_id": result["run_id"], "store": store}


def _student(*overrides: str, base: tuple[str, ...] = tuple(STUDENT)) -> DistillationTask:
    cfg = compose_config([*base, *FAST, *overrides], conf=CONF)
    return build_task(TaskContext(cfg, SHAPE, CLASSES, resolve_checkpoint=resolve_checkpoint))


def _variant(checkpoint: Path, dest: Path, edit) -> Path:  # noqa: ANN001 - edits the loaded checkpoint dict in place
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    edit(saved)
    torch.save(saved, dest)
    return dest


def test_teacher_is_rebuilt_exactly_from_its_checkpoint_and_its_run(teacher_run: dict, monkeypatch) -> None:
    cfg = compose_config([*TEACHER, *FAST], conf=CONF)
    original = build_task(TaskContext(cfg, SHAPE, CLASSES))
    original.load_state_dict(torch.load(teacher_run["checkpoint"], weights_only=True)["state_dict"])
    x = torch.randn(16, *SHAPE)
    expected = original.eval()(x)
    loaded = load_classifier(resolve_checkpoint(str(teacher_run["checkpoint"]), "task.teacher", ""), SHAPE)
    assert isinstance(loaded.model, Classifier) and loaded.run_id == teacher_run["run_id"], "run.json names the run"
    assert torch.equal(loaded.model.eval()(x), expected)
    monkeypatch.setenv("LABLINE_PROJECT_ROOT", str(teacher_run["store"]))
    by_run = load_classifier(resolve_checkpoint(teacher_run["run_id"], "task.teacher", ""), SHAPE)
    assert by_run.run_id == teacher_run["run_id"] and torch.equal(by_run.model.eval()(x), expected)


def test_distilled_student_trains_on_the_enabled_terms_and_keeps_the_teacher_out(teacher_run: dict, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    from labline.runs.lightning_run import train_and_test
    from labline.tracking.store import tracking_uri

    attention = ["task.loss_terms.attention.weight=1.0", "task.loss_terms.attention.teacher_layers=[net.0.2,net.0.4]",
                 "task.loss_terms.attention.student_layers=[net.0.0,net.0.2]", "task.loss_terms.hard.weight=0.0",
                 "task.loss_terms.feature.weight=0.01"]
    cfg = compose_config([*STUDENT, *FAST, f"task.teacher={teacher_run['checkpoint']}", *attention], conf=CONF)
    result = train_and_test(cfg, tmp_path, ROOT)
    header = (tmp_path / "curves.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_soft", "train/loss_feature", "train/loss_attention"} <= set(header)
    assert "train/loss_hard" not in header, "weight 0 disables the hard term"
    saved = torch.load(tmp_path / "checkpoints" / "model.ckpt", weights_only=True)
    assert not any(k.startswith("teacher") for k in saved["state_dict"]), "the teacher is not part of the student"
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.data.tags["distill.teacher_run_id"] == teacher_run["run_id"]
    # the checkpoint of a distilled student is itself a teacher: backbone and head only
    student_ckpt = resolve_checkpoint(str(tmp_path / "checkpoints" / "model.ckpt"), "task.teacher", "")
    assert load_classifier(student_ckpt, SHAPE).num_classes == CLASSES


def test_an_ensemble_of_teachers_averages_their_soft_targets(teacher_run: dict, tmp_path) -> None:
    def shift(saved: dict) -> None:
        saved["state_dict"]["head.fc.bias"] = saved["state_dict"]["head.fc.bias"] + torch.arange(CLASSES).float()

    other = _variant(teacher_run["checkpoint"], tmp_path / "other.ckpt", shift)
    # the experiment names one teacher (a string); task=distill takes a list as well
    student = _student(f"task.teacher=[{teacher_run['checkpoint']},{other}]", "task.loss_terms.hard.weight=0.0",
                       base=("experiment=distill_student_scratch", "task=distill", "backbone.channels=[4,8]"))
    assert len(student.teachers) == 2
    x, y = torch.randn(8, *SHAPE), torch.arange(8) % CLASSES
    student._teacher_outputs = [teacher(x) for teacher in student.teachers]
    logits = student(x)
    loss, terms = student._loss(logits, y)
    first, second = (t.model(x) for t in student.teachers)
    assert not torch.allclose(first, second)
    averaged = ((first / 4.0).softmax(1) + (second / 4.0).softmax(1)) / 2
    assert terms["soft"].item() == pytest.approx(soft_target_loss(logits, averaged, 4.0).item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.9 * terms["soft"].item(), rel=1e-6)


def _num_classes_3(saved: dict) -> None:
    saved["hyper_parameters"]["num_classes"] = 3
    for key in ("head.fc.weight", "head.fc.bias"):
        saved["state_dict"][key] = saved["state_dict"][key][:3]


def _not_a_classifier(saved: dict) -> None:
    saved["hyper_parameters"]["config"]["task"]["_target_"] = "torch.nn.Linear"


@pytest.mark.parametrize(("edit", "problem"), [(_num_classes_3, "predicts 3 classes, the student's data has 10"),
                                               (_not_a_classifier, "trained with task torch.nn.Linear, not a classifier")])
def test_a_mismatched_teacher_is_a_config_error(teacher_run: dict, tmp_path, edit, problem: str) -> None:  # noqa: ANN001
    bad = _variant(teacher_run["checkpoint"], tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError, match=problem) as err:
        _student(f"task.teacher={bad}")
    assert err.value.key == "task.teacher" and "\n" not in str(err.value)


@pytest.mark.parametrize(("teacher", "problem"), [("no/such/model.ckpt", "no checkpoint file"),
                                                  ("0123456789abcdef0123456789abcdef", "run"),
                                                  ("null", "term\\(s\\) need a teacher")])
def test_a_missing_teacher_is_a_config_error(teacher: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as err:
        _student(f"task.teacher={teacher}")
    assert err.value.key == "task.teacher"


def test_a_layer_the_backbone_does_not_have_is_a_config_error(teacher_run: dict) -> None:
    with pytest.raises(ConfigError, match="no layer 'net.9'"):
        _student(f"task.teacher={teacher_run['checkpoint']}", "task.loss_terms.attention.weight=1.0",
                 "task.loss_terms.attention.teacher_layers=[net.9]", "task.loss_terms.attention.student_layers=[net.0.0]")


# --- the pipeline's params files -------------------------------------------------------------------------------------

def test_pipeline_params_files_match_what_conf_composes() -> None:
    pipeline = ROOT / "pipelines" / "distill"
    seeds = yaml.safe_load((pipeline / "dvc.yaml").read_text())["vars"][0]["study"]["seeds"]
    expected = {"teacher": ["experiment=distill_teacher"]}
    for seed in seeds:
        expected[f"student_seed{seed}"] = ["experiment=distill_student", f"seed={seed}"]
        expected[f"scratch_seed{seed}"] = ["experiment=distill_student_scratch", f"seed={seed}"]
    assert {p.stem for p in (pipeline / "params").glob("*.yaml")} == set(expected)
    for name, overrides in expected.items():
        cfg = compose_config(overrides, conf=CONF)
        OmegaConf.resolve(cfg)
        assert OmegaConf.load(pipeline / "params" / f"{name}.yaml") == cfg, f"regenerate params/{name}.yaml (see dvc.yaml)"
    shared = ("data", "split", "preprocess")
    files = [OmegaConf.load(pipeline / "params" / f"{name}.yaml") for name in expected]
    assert all(all(f[k] == files[0][k] for k in shared) and f.paths.processed == files[0].paths.processed for f in files)
