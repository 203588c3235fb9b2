"""Debian's chromium driven by Playwright, for the dashboard's end-to-end tests.

Under ``CI=true`` a browser that cannot launch fails the test (``.ci/run`` installs the Debian
package); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage"]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium (Playwright's Browser) until the block ends."""
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        except Error as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"chromium cannot launch under CI: {exc}")
            pytest.skip(f"chromium cannot launch ({CHROMIUM}; apt-get install chromium): {exc}")
        try:
            yield browser
        finally:
            browser.close()
