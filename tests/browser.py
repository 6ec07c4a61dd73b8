"""A real browser for the console's tests: Debian's headless Chromium driven through its
chromedriver by Selenium (``make test`` installs both where missing). Selenium's own driver
download is never used: the machine has no internet, and the system's pair match."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.localcluster.conftest import REPO
from tests.localcluster.node.conftest import eventually

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("CADRE_SCREENSHOTS") or REPO / "build" / "console-screenshots")
"""Where the tests leave a picture of each page (docs/console.md shows copies of them)."""


AXE = REPO / "build" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core, the accessibility engine (installed from npm by ``make test``)."""


def accessibility_violations(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """What axe-core finds on the page against WCAG 2.1 A and AA (contrast, names, labels,
    landmarks...), as its result objects."""
    if not AXE.exists():
        pytest.skip(f"{AXE} is not installed (make test installs it with npm)")
    driver.execute_script(AXE.read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a',"
        " 'wcag21aa']}}).then(r => done(r.violations), e => done([{id: 'axe-error',"
        " help: String(e), nodes: []}]));"
    )
    found: list[dict[str, Any]] = result
    return found


def missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is not installed (make test installs chromium and chromium-driver)"
    return None


@contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with an empty profile; quit (chromedriver stopped by its PID) after."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 "--window-size=1280,900", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], Any], within: float = 30.0) -> Any:
    """``eventually``, with the patience a browser on a loaded machine needs."""
    return eventually(check, timeout=within)


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    why = missing()
    if why:
        pytest.skip(why)
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver
