"""End to end: a message sent through the API and delivered over SMTP is displayed by a real
HTML mail reader (headless Chromium), which fetches the pixel, and the API shows the view."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from mailseen.core.compose import Draft
from mailseen.records import MailboxIn
from mailseen.services.accounts import hash_token

from .browser import sign_in
from .conftest import API_TOKEN, LiveServer, backdate_sent, html_of
from .smtp_server import SmtpServer
from .web_client import PASSWORD

DESKTOP_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer("starttls", {"relay": "pw"}).start(tmp_path)
    yield server
    server.stop()


async def test_chromium_displaying_the_delivered_message_records_a_view(
        tmp_path: Path, database_url: str, relay: SmtpServer, browser: object) -> None:
    server = LiveServer(tmp_path, database_url, ca_file=relay.ca_file).start()
    try:
        api = httpx.Client(base_url=server.url + "/api/v1",
                           headers={"Authorization": f"Bearer {API_TOKEN}"})
        server.instance.store.add_token("e2e", hash_token(API_TOKEN))
        assert api.put("/settings", json={"tracking_enabled": True}).status_code == 200
        api.post("/mailboxes", json={
            "address": "support@example.com", "display_name": "Support", "transport": "smtp",
            "smtp_host": "127.0.0.1", "smtp_port": relay.port, "smtp_tls": "starttls",
            "smtp_username": "relay", "smtp_password": "pw"}).raise_for_status()
        sent = api.post("/messages", json={
            "mailbox": "support@example.com", "to": ["customer@example.org"],
            "subject": "Your ticket", "text": "Hello",
            "html": "<html><body><h1>Hello</h1><p>We fixed it.</p></body></html>"}).json()
        assert sent["tracking"] == {"tracked": True, "reason": "enabled globally; the pixel "
                                    f"URL {server.url} is not reachable by recipients"}
        for _ in range(200):  # the server's worker delivers it to the relay
            if relay.messages:
                break
            time.sleep(0.025)
        [delivered] = relay.messages
        html = html_of(delivered.data)
        assert f"{server.url}/t/" in html

        before = api.get(f"/messages/{sent['id']}").json()
        assert before["viewed"] is False

        # A person opens it a while after delivery, in an ordinary browser-based reader (a
        # headless browser's own user agent is, rightly, judged a machine).
        backdate_sent(server.instance, sent["id"])
        context = await browser.new_context(user_agent=DESKTOP_CHROME)  # type: ignore[attr-defined]
        page = await context.new_page()
        async with page.expect_response(lambda r: "/t/" in r.url) as pixel:
            await page.set_content(html)
        response = await pixel.value
        assert response.status == 200
        assert await response.header_value("content-type") == "image/gif"
        await context.close()

        after = api.get(f"/messages/{sent['id']}").json()
        assert after["viewed"] is True and after["view_count"] == 1
        [view] = after["views"]
        assert view["user_agent"] == DESKTOP_CHROME
        assert view["verdict"] == "human"
        assert view["ip"] == "127.0.0.1"
        api.close()
    finally:
        server.stop()


FIREFOX = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:128.0) Gecko/20100101 "
           "Firefox/128.0")


async def test_two_recipients_open_their_copies_and_the_open_conversation_names_both(
        tmp_path: Path, database_url: str, relay: SmtpServer, browser: Any) -> None:
    """Two readers (browser contexts of their own) display the copy each received over
    SMTP; the team, with the conversation open, sees each name appear without a reload."""
    server = LiveServer(tmp_path, database_url, ca_file=relay.ca_file).start()
    try:
        inst = server.instance
        inst.accounts.create_user("ada@example.com", PASSWORD, name="Ada", role="admin")
        box = inst.mailboxes.add(None, MailboxIn(
            "sales@example.com", "Acme Sales", transport="smtp", smtp_host="127.0.0.1",
            smtp_port=relay.port, smtp_tls="starttls", smtp_username="relay",
            smtp_password="pw", tracking="enabled"))
        sent = inst.sender.send_draft(box, Draft(
            from_addr=box.address, to=["erin@example.org"], cc=["frank@example.org"],
            subject="Quote for two", html="<p>Our quote for you both.</p>"))
        for _ in range(400):  # the server's worker delivers one copy to each
            if len(relay.messages) == 2:
                break
            time.sleep(0.025)
        copies = {tuple(m.rcpt_tos): html_of(m.data) for m in relay.messages}
        assert sorted(copies) == [("erin@example.org",), ("frank@example.org",)]
        backdate_sent(inst, sent.id)  # opened a while after delivery, as people do

        team = await browser.new_context()
        page = await team.new_page()
        await sign_in(page, server.url, "ada@example.com", PASSWORD)
        await page.goto(f"{server.url}/conversations/{sent.conversation_id}")
        await page.evaluate("window.stillTheSamePage = true")
        article = page.locator(f"#message-{sent.id}")
        await expect(article.locator(".views-human .count")).to_have_text("0")

        for n, (reader, agent) in enumerate(((("frank@example.org",), DESKTOP_CHROME),
                                             (("erin@example.org",), FIREFOX)), 1):
            context = await browser.new_context(user_agent=agent)
            mail = await context.new_page()
            async with mail.expect_response(lambda r: "/t/" in r.url) as pixel:
                await mail.set_content(copies[reader])
            assert (await pixel.value).status == 200
            await context.close()
            await expect(article.locator(".views-human .count")).to_have_text(
                str(n), timeout=10_000)
            await expect(article.locator(".timeline .event-human .who").nth(n - 1)
                         ).to_have_text(reader[0])
        who = article.locator("tr.recipient")
        for address in ("erin@example.org", "frank@example.org"):
            row = who.filter(has_text=address)
            await expect(row.locator("td.count").first).to_have_text("1")
        await expect(article.locator(".status-text")).to_contain_text(
            "Viewed by 2 of 2 recipients")
        assert await page.evaluate("window.stillTheSamePage") is True
        await team.close()
    finally:
        server.stop()
