"""Headless Chromium for the UI browser tests (Playwright driving the OS package).

Fixtures (module scope; `tests/cli/conftest.py` makes them available there): ``chromium``,
Playwright's Chromium driver, and ``browser``, one launched browser. No Chromium or no
playwright skips the test, or fails it under ``CI=true`` (`servers.unavailable`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import unavailable

CHROMIUM = os.environ.get("BLOCKS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI containers
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts" / "ui"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Playwright's Chromium driver, pointed at the OS package by each launch."""
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        yield playwright.chromium


@pytest.fixture(scope="module")
def browser(chromium: Any) -> Iterator[Any]:
    launched = chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot in ``tests/artifacts/ui/NAME.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
