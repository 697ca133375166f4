"""Real headless Chromium (Debian's, driven by Playwright; no browser download) for
end-to-end tests. conftest.py loads this module as a plugin, so the ``browser`` fixture is
available to every test.

pytest-playwright's sync fixtures break asyncio tests that run after them, so these are
plain async fixtures on the test's own loop.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("MAILSEEN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A Chromium browser; open separate ``browser.new_context()`` for separate people."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def sign_in(page: Any, base_url: str, email: str, password: str) -> None:
    """Sign in through the real form."""
    await page.goto(f"{base_url}/login")
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(lambda url: "/login" not in url)
