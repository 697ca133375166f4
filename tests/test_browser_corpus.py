"""The pixel adds nothing visible: every newsletter in the corpus, tagged by the real tagger
and rendered by headless Chromium at 800 px, is pixel for pixel its untagged self, and at
most 1 px taller. The pixel is served by the test (and must load); anything else the
newsletters would fetch is refused the same way in both renderings, so nothing external is
reached and the two screenshots differ only by what the tag does."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailseen.core.inject import tag_message
from mailseen.core.pixel import GIF, pixel_tag, pixel_url

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "newsletters"
BASE = "https://track.example"
WIDTH = 800


def _never_own(url: str) -> bool:
    return False


def _tagged(html: str, pixel: str) -> str:
    """``html`` sent through the real tagger, as a mail client would decode it."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.org", "News"
    msg.set_content(html, subtype="html")
    result = tag_message(msg.as_bytes(), pixel_tag(pixel), _never_own)
    assert result.trackable, result.reason
    out = email.message_from_bytes(result.data, policy=email.policy.default)
    assert isinstance(out, EmailMessage)
    return str(out.get_content())


async def _serve_pixel_refuse_the_rest(route: Any) -> None:
    if route.request.url.startswith(f"{BASE}/t/"):
        await route.fulfill(status=200, content_type="image/gif", body=GIF)
    else:
        await route.abort()


@pytest.fixture
def newsletters() -> list[Path]:
    files = sorted(CORPUS.glob("*.html"))
    if not files:
        pytest.skip(f"no corpus at {CORPUS}")
    return files


async def test_the_pixel_changes_no_pixel_of_any_newsletter(
        browser: Any, newsletters: list[Path]) -> None:
    # A short viewport, so a page shorter than it still shows its real height.
    context = await browser.new_context(viewport={"width": WIDTH, "height": 100})
    await context.route("**/*", _serve_pixel_refuse_the_rest)
    page = await context.new_page()
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    grown: list[str] = []
    for n, path in enumerate(newsletters):
        html = path.read_bytes().decode("utf-8", "replace")
        pixel = pixel_url(BASE, f"{n:031d}")  # one per page: a cached image is not fetched
        await page.set_content(html, wait_until="load")
        height = await page.evaluate("document.documentElement.scrollHeight")
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": height}
        before = await page.screenshot(full_page=True, clip=clip)
        fetched.clear()
        await page.set_content(_tagged(html, pixel), wait_until="load")
        assert pixel in fetched, f"{path.name}: the pixel did not load"
        tagged_height = await page.evaluate("document.documentElement.scrollHeight")
        after = await page.screenshot(full_page=True, clip=clip)
        if not 0 <= tagged_height - height <= 1:
            grown.append(f"{path.name}: {height} -> {tagged_height} px")
        elif after != before:
            grown.append(f"{path.name}: pixels differ")
    await context.close()
    assert grown == []
