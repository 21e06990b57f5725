"""docs/components.md is generated from conf/ and must be regenerated when conf/ changes."""

from __future__ import annotations

from labline.reporting.components_doc import render
from testroot import CONF, ROOT


def test_components_doc_is_current() -> None:
    committed = (ROOT / "docs" / "components.md").read_text()
    assert committed == render(CONF), "run `labline docs` and commit docs/components.md"


def test_every_option_appears_with_its_knobs() -> None:
    text = render(CONF)
    for option in sorted(CONF.glob("*/*.yaml")):
        if option.parent.name != "hydra":
            assert f"`{option.parent.name}={option.stem}`" in text
    assert "`lr` = `0.001`" in text
