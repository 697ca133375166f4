"""End to end: a message sent through the API with click tracking on, delivered over SMTP,
shown by a real HTML mail reader (headless Chromium) with remote images blocked, and a link
in it clicked: the browser lands on the link's own page, the click is counted, and it counts
as the view the blocked pixel could not record."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from mailseen.services.accounts import hash_token

from .conftest import API_TOKEN, LiveServer, backdate_sent, html_of
from .smtp_server import SmtpServer

DESKTOP_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")


class _Shop(BaseHTTPRequestHandler):
    """The site the link leads to: a page of its own, on a port of its own."""

    landed: list[str] = []  # noqa: RUF012 (the test reads what was asked for)

    def do_GET(self) -> None:
        type(self).landed.append(self.path)
        body = b"<title>Offer</title><h1>The offer</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def shop() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Shop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Shop.landed = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer("starttls", {"relay": "pw"}).start(tmp_path)
    yield server
    server.stop()


async def test_a_link_clicked_in_chromium_lands_on_its_page_and_is_counted(
        tmp_path: Path, database_url: str, relay: SmtpServer, shop: str,
        browser: object) -> None:
    # "&region" without ";" is no reference in an attribute: Chromium goes to it as written.
    offer = f"{shop}/offer?id=7&ref=mail&region=eu"
    server = LiveServer(tmp_path, database_url, ca_file=relay.ca_file).start()
    try:
        api = httpx.Client(base_url=server.url + "/api/v1",
                           headers={"Authorization": f"Bearer {API_TOKEN}"})
        server.instance.store.add_token("e2e", hash_token(API_TOKEN))
        assert api.put("/settings", json={"tracking_enabled": True,
                                          "click_tracking_enabled": True}).status_code == 200
        api.post("/mailboxes", json={
            "address": "sales@example.com", "display_name": "Sales", "transport": "smtp",
            "smtp_host": "127.0.0.1", "smtp_port": relay.port, "smtp_tls": "starttls",
            "smtp_username": "relay", "smtp_password": "pw"}).raise_for_status()
        sent = api.post("/messages", json={
            "mailbox": "sales@example.com", "to": ["customer@example.org"],
            "subject": "Our offer", "text": "See our offer",
            "html": f'<html><body><p>See <a id="offer" href="{shop}/offer?id=7&amp;ref=mail'
                    '&region=eu">our offer</a> or <a href="mailto:sales@example.com">write</a>.</p>'
                    "</body></html>"}).json()
        assert sent["clicks_tracked"] is True
        for _ in range(200):  # the server's worker delivers it to the relay
            if relay.messages:
                break
            time.sleep(0.025)
        [delivered] = relay.messages
        html = html_of(delivered.data)
        assert f'href="{server.url}/c/' in html and 'href="mailto:sales@example.com"' in html

        backdate_sent(server.instance, sent["id"])  # read an hour after delivery
        context = await browser.new_context(user_agent=DESKTOP_CHROME)  # type: ignore[attr-defined]

        async def no_images(route: object) -> None:
            await route.abort()  # type: ignore[attr-defined]

        await context.route(f"{server.url}/t/**", no_images)  # a reader with images off
        page = await context.new_page()
        await page.set_content(html)
        async with page.expect_navigation(url=offer):
            await page.click("#offer")
        assert page.url == offer and _Shop.landed == ["/offer?id=7&ref=mail&region=eu"]
        assert await page.title() == "Offer"
        await context.close()

        detail = api.get(f"/messages/{sent['id']}").json()
        [click] = detail["clicks"]
        assert (click["url"], click["verdict"], click["link"]) == (offer, "human", 0)
        assert click["recipient_address"] == "customer@example.org"
        assert click["user_agent"] == DESKTOP_CHROME
        [row] = detail["recipients"]
        assert row["click_count"] == 1
        # The pixel never loaded; the click says the message was seen.
        assert detail["viewed"] is True and detail["view_count"] == 1
        [view] = detail["views"]
        assert view["reason"].startswith("followed a link")
        api.close()
    finally:
        server.stop()
