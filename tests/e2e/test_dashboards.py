"""What a researcher sees, seen in a real browser: `dvc plots show` offline, and the MLflow UI as `make ui` serves it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import browser, close_side_panels, requested_urls, screenshot
from mlflow.tracking import MlflowClient
from project_copy import BIN, project_env, run_cli
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from labline.reporting.console import model_training_url

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


# ---- the MLflow UI, served as `make ui` serves it, over a training, a sweep and an ablation -------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui(project: Path) -> Iterator[tuple[str, MlflowClient]]:
    for args in (["labline", "train", "trainer.max_epochs=3", "threads=1", "trainer.enable_progress_bar=false"],
                 ["labline", "train", "-m", "hparams_search=digits_cnn", "trainer.max_epochs=2",
                  "+trainer.limit_train_batches=3", "logger.log_checkpoint=false", "threads=1", "hydra.sweeper.n_trials=2"],
                 ["labline", "ablate", "ablation=tiny", "seeds=1"]):
        done = run_cli(project, *args, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    store = f"sqlite:///{project / 'mlflow.db'}"
    port = _free_port()
    # The command `make ui` runs (Makefile), on a free port; its job-runner children ignore SIGTERM: own session,
    # the whole group is killed at the end.
    server = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port",
                               str(port), "--workers", "1"], cwd=project, env=project_env(project),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
        yield url, MlflowClient(store)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _names(driver) -> list[str]:  # noqa: ANN001 - a selenium WebDriver
    cells = driver.find_elements(By.CSS_SELECTOR, "[role=gridcell][col-id='attributes.`Run Name`']")
    return [cell.text.splitlines()[-1] for cell in cells]


def _wait(driver, condition, seconds: float = 60) -> None:  # noqa: ANN001
    WebDriverWait(driver, seconds).until(lambda d: condition())


def test_the_experiment_opens_on_its_runs_with_trials_and_variants_nested(ui, tmp_path: Path) -> None:
    url, client = ui
    experiment = client.get_experiment_by_name("digits")
    with browser() as driver:
        driver.get(model_training_url(url, experiment.experiment_id))
        _wait(driver, lambda: len(_names(driver)) >= 3)
        page = driver.execute_script("return document.body.innerText")
        assert "/runs" in driver.current_url and "Token Usage" not in page, "the runs table, not the GenAI overview"
        close_side_panels(driver)
        top = _names(driver)
        assert {"study-digits_cnn", "ablation-tiny", "digits-cnn-adam-seed0"} <= set(top)
        assert not any("trial" in name for name in top), "trials are nested under their study, not listed beside it"
        screenshot(driver, "mlflow_runs.png", tmp_path)
        for parent, child in (("study-digits_cnn", "digits_cnn-trial-"), ("ablation-tiny", "tiny-full-seed0")):
            cell = next(c for c in driver.find_elements(By.CSS_SELECTOR, "[role=gridcell][col-id='attributes.`Run Name`']")
                        if c.text.endswith(parent))
            cell.find_element(By.CSS_SELECTOR, "button").click()
            _wait(driver, lambda child=child: any(name.startswith(child) for name in _names(driver)))
        screenshot(driver, "mlflow_study.png", tmp_path)


def test_a_run_page_shows_its_learning_curves(ui, tmp_path: Path) -> None:
    url, client = ui
    experiment = client.get_experiment_by_name("digits")
    found = client.search_runs([experiment.experiment_id], "attributes.run_name = 'digits-cnn-adam-seed0'")
    (run,) = [r for r in found if "pipeline" not in r.data.tags]  # the ad-hoc training, not the module's `dvc repro`
    with browser() as driver:
        driver.get(model_training_url(url, experiment.experiment_id, run.info.run_id, "model-metrics"))
        drawn = "return document.querySelectorAll('.js-plotly-plot').length"
        _wait(driver, lambda: driver.execute_script(drawn) >= 4)
        close_side_panels(driver)
        screenshot(driver, "mlflow_run.png", tmp_path)
        # charts further down (best/val/* sort first) are drawn when scrolled to: the page's own chart search brings
        # the validation loss curve up
        driver.find_element(By.CSS_SELECTOR, "input[placeholder='Search metric charts']").send_keys("val/loss")
        _wait(driver, lambda: "(val/loss)" in driver.execute_script("return document.body.innerText"))
        assert driver.execute_script(drawn) >= 1
