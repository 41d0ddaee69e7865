"""The browser fixtures (`tests/browser.py`) for the UI browser tests in this folder."""

from browser import browser, chromium

__all__ = ["browser", "chromium"]
