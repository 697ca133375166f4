"""End to end in Chromium: the first run of a new installation, then signing out and in."""

from __future__ import annotations

from typing import Any

from .browser import sign_in
from .conftest import LiveServer

PASSWORD = "a long admin passphrase"


async def test_first_run_setup_then_sign_out_and_in(live_server: LiveServer,
                                                    browser: Any) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(live_server.url + "/")
    assert page.url.endswith("/setup")  # a new installation asks for its first admin
    await page.fill("#name", "Ada Admin")
    await page.fill("#email", "ada@example.com")
    await page.fill("#password", PASSWORD)
    await page.fill("#password2", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(lambda url: "/setup" not in url)
    assert "/settings" in page.url  # next: add a mailbox
    assert await page.locator(".who").inner_text() == "Ada Admin"

    await page.click("form.signout button")
    await page.wait_for_url(lambda url: url.endswith("/login"))
    await page.goto(live_server.url + "/setup")  # setup is closed for good
    assert page.url.endswith("/login")

    await page.fill("#email", "ada@example.com")
    await page.fill("#password", "not the password")
    await page.click("button[type=submit]")
    await page.wait_for_selector(".error")
    assert "wrong email or password" in await page.locator(".error").inner_text()

    await sign_in(page, live_server.url, "ada@example.com", PASSWORD)
    await page.goto(live_server.url + "/conversations")
    assert await page.locator("h1").inner_text() == "All mailboxes"
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies["mailseen_session"]["httpOnly"] is True
    await context.close()
