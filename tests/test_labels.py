"""Label encodings: what each loss receives from the datamodule's class indices."""

from __future__ import annotations

import pytest
import torch

from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.losses import labels


def test_smoothing_follows_concepts_convention() -> None:
    soft = labels.smooth(torch.tensor([0]), 3, 0.1)
    assert torch.allclose(soft, torch.tensor([[0.9, 0.05, 0.05]]))
    assert torch.allclose(labels.smooth(torch.tensor([2, 1]), 5, 0.2).sum(1), torch.ones(2))


def test_onehot_and_soft_from_indices() -> None:
    y = torch.tensor([2, 0])
    expected = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert torch.equal(labels.encode(y, "onehot", 3), expected)
    assert torch.equal(labels.encode(y, "soft", 3), expected)
    assert labels.encode(y, "index", 3) is y


def test_multihot_from_padded_label_lists() -> None:
    lists = torch.tensor([[0, 2, -1], [1, 1, -1], [-1, -1, -1]])
    expected = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(labels.encode(lists, "multihot", 4), expected)


def test_vector_labels_pass_through_and_are_checked() -> None:
    soft = torch.tensor([[0.2, 0.8]])
    assert torch.equal(labels.encode(soft, "soft", 2), soft)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        labels.encode(soft, "soft", 3)


def test_unknown_encoding_is_a_config_error(compose) -> None:
    with pytest.raises(ConfigError) as err:
        instantiate(compose("loss=mse", "loss.target=ordinal").loss, "loss")
    assert err.value.key == "loss.target"
    assert "onehot" in str(err.value) and "\n" not in str(err.value)
