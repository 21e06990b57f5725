"""Headless Chromium for the dashboard tests (Debian's chromium + chromium-driver, driven by selenium).

`make test` installs the two Debian packages when it runs as root; elsewhere the tests that need a browser
say how to get one (and fail under CI=true, where they must run). The browser starts with no network but
loopback: background services off, and every page's requests recorded, so a test can assert that a page
fetched nothing from outside.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from project_copy import unavailable

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver (as root; `make test` does it)"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--disable-default-apps", "--window-size=1400,1000")


def require_browser() -> None:
    """A test without a browser is skipped, saying how to get one; under CI=true that is a failure."""
    if Path(CHROMIUM).exists() and Path(DRIVER).exists():
        return
    unavailable(f"headless Chromium is not installed: {INSTALL}")


@contextmanager
def browser(offline: bool = False) -> Iterator[Any]:
    """A Chrome session; ``offline`` cuts even loopback (a file:// page must stand alone)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        if offline:
            driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                                   {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for since the last call (from Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def close_side_panels(driver: Any) -> None:
    """MLflow 3.17 opens its assistant panel on first load; it hides half the page in a screenshot."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()


def screenshot(driver: Any, name: str, folder: Path) -> Path:
    """Save the page; with ``LABLINE_SCREENSHOTS=<dir>`` also there (how docs/images/ is regenerated)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    driver.save_screenshot(str(path))
    extra = os.environ.get("LABLINE_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / name)
    return path
