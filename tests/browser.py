"""A real headless Chromium (Debian's ``chromium`` package) driven by Playwright.

Playwright's own browser download is never used: it launches the system binary.
Tests fail, not skip, when it is missing, so CI cannot pass without a browser.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = (
    os.environ.get("LONGPLAY_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless browser for as long as the block runs."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set "
            "LONGPLAY_TEST_CHROMIUM)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
