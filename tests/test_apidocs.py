"""The API's documentation page: served whole by the app (offline, under its CSP), and
`nosniff` on what the API and the static files answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from mailseen.web.headers import CONTENT_SECURITY_POLICY

from .conftest import LiveServer
from .web_client import WebClient


def test_the_api_docs_load_nothing_from_another_site(web: WebClient) -> None:
    resp = web.client.get("/api/v1/docs")
    assert resp.status_code == 200
    assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    soup = BeautifulSoup(resp.text, "html.parser")
    assert not soup.select("script:not([src])")  # no inline script: the CSP would stop it
    urls = [n["src"] for n in soup.select("script[src]")] + [
        n["href"] for n in soup.select("link[href]")]
    assert len(urls) == 3
    for url in urls:
        assert not urlsplit(url).netloc and url.startswith("/api/v1/docs/")
        asset = web.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert "Apache License" in web.client.get("/api/v1/docs/assets/LICENSE").text


@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/openapi.json", "/api/v1/mailboxes",
                                  "/api/v1/nowhere", "/static/app.css", "/static/app.js",
                                  "/login"])
def test_api_and_static_responses_forbid_sniffing(web: WebClient, path: str) -> None:
    resp = web.client.get(path)
    assert resp.headers.get_list("x-content-type-options") == ["nosniff"]


@pytest.fixture
async def live(tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    server = LiveServer(tmp_path, database_url).start()
    yield server
    await asyncio.to_thread(server.stop)


async def test_the_api_docs_render_offline_in_a_browser_under_the_csp(
        browser: Any, live: LiveServer) -> None:
    context = await browser.new_context()
    elsewhere: list[str] = []

    async def offline(route: Any) -> None:  # nothing but the server itself is reachable
        if route.request.url.startswith(live.url + "/"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await context.route("**/*", offline)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(live.url + "/api/v1/docs")
    # Operations from the OpenAPI document, drawn by Swagger UI.
    await page.locator(".opblock-summary-path", has_text="/api/v1/mailboxes").first.wait_for()
    assert await page.locator(".opblock").count() > 10
    assert not elsewhere
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    await context.close()
