"""What a researcher sees, seen in a real browser: `dvc plots show` offline, and the MLflow UI as `make ui` serves it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from browser import browser, requested_urls, screenshot
from project_copy import run_cli

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=3", "threads=1"]


@pytest.fixture(scope="module")
def plots_page(project: Path) -> Path:
    """`dvc repro` of a tiny default pipeline, then `dvc plots show` with the project's offline template."""
    assert run_cli(project, "labline", "params", *TINY).returncode == 0
    repro = run_cli(project, "dvc", "repro", timeout=600)
    assert repro.returncode == 0, repro.stdout[-2000:] + repro.stderr[-2000:]
    written = run_cli(project, "labline", "plots-html")
    assert written.returncode == 0, written.stderr
    shown = run_cli(project, "dvc", "plots", "show", "--out", "dvc_plots")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    page = project / "dvc_plots" / "index.html"
    assert page.is_file()
    return page


def test_dvc_plots_page_needs_no_network(plots_page: Path) -> None:
    html = plots_page.read_text()
    assert "cdn.jsdelivr.net" not in html and "<script src=" not in html, "no script is loaded from outside the page"


def test_dvc_plots_render_offline_with_named_axes(plots_page: Path, tmp_path: Path) -> None:
    with browser(offline=True) as driver:
        driver.get(plots_page.as_uri())
        driver.implicitly_wait(10)
        charts = driver.execute_script(
            "return Array.from(document.querySelectorAll('.vega-embed')).map(e => e.querySelector('svg, canvas') !== null)")
        text = driver.execute_script("return document.body.innerText")
        images = driver.execute_script("return document.querySelectorAll('img').length")
        screenshot(driver, "dvc_plots.png", tmp_path)
        urls = requested_urls(driver)
    # exactly the three declared charts: stage-level `plots:` outputs would add default-styled ones
    # (val/recall_micro against step, predicted class against sample index)
    assert charts == [True, True, True], "loss, accuracy and confusion charts are drawn (Vega ran offline)"
    for label in ("loss per epoch", "accuracy per epoch", "test confusion matrix"):
        assert label in text
    assert images == 1, "the confusion-matrix PNG once, not twice"
    outside = [u for u in urls if not u.startswith(("file://", "data:", "blob:", "about:"))]
    assert outside == [], outside


def _git_ignored(project: Path, path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=project).returncode == 0


def test_dvc_plots_output_is_not_committed_by_accident(project: Path, plots_page: Path) -> None:
    assert _git_ignored(project, "dvc_plots/index.html")
