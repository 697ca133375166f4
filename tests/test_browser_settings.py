"""End to end in real headless Chromium: an admin sets tracking in the settings pages and the
mailbox setting beats the global one when mail is sent; a member cannot reach another
team's mailbox; the pages fit a phone and break no content-security rule."""

from __future__ import annotations

from typing import Any

from mailseen.core.compose import Draft
from mailseen.records import MailboxIn, MailboxRecord
from mailseen.services.instance import Instance

from .browser import sign_in
from .conftest import LiveServer
from .web_client import PASSWORD

HTML = "<html><body><p>Your order has shipped.</p></body></html>"


def _send(instance: Instance, box: MailboxRecord) -> tuple[bool, str, bytes]:
    fresh = instance.store.get_mailbox(box.id)
    msg = instance.sender.send_draft(fresh, Draft(
        from_addr=fresh.address, to=["customer@example.org"], subject="Shipped", html=HTML))
    [copy] = instance.store.copies_of([msg.id])[msg.id]  # what goes out to the customer
    return (msg.tracked, msg.tracking_reason,
            instance.sender.copy_bytes(instance.store.get_raw(msg.id), copy))


async def _set_global(page: Any, url: str, choice: str) -> None:
    await page.goto(f"{url}/settings")
    await page.check(f"#tracking-{choice}")
    await page.click("text=Save")
    assert await page.text_content(".notice") == "Saved."


async def _set_mailbox(page: Any, url: str, box: MailboxRecord, choice: str) -> str:
    await page.goto(f"{url}/settings/mailboxes/{box.id}?tab=misc")
    # By keyboard: the radio group is one tab stop, arrows choose, Tab reaches Save.
    await page.focus("#tracking input:checked")
    order = ["global", "enabled", "disabled"]
    current = await page.eval_on_selector("#tracking input:checked", "e => e.value")
    for _ in range((order.index(choice) - order.index(current)) % 3):
        await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_url(lambda u: "done=saved" in u)
    assert await page.is_checked(f"#tracking-{choice}")
    return " ".join((await page.text_content(".status-line") or "").split())


async def test_the_mailbox_setting_beats_the_global_one_both_ways(
        live_server: LiveServer, browser: Any) -> None:
    inst, url = live_server.instance, live_server.url
    inst.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    box = inst.store.add_mailbox(MailboxIn(address="support@example.com"))
    page = await browser.new_page()
    await sign_in(page, url, "ada@example.com", PASSWORD)

    await _set_global(page, url, "off")
    assert inst.mailboxes.global_tracking() is False
    status = await _set_mailbox(page, url, box, "enabled")
    assert "tracked (enabled by mailbox setting)" in status
    tracked, reason, raw = _send(inst, box)
    unreachable = f"; the pixel URL {url} is not reachable by recipients"  # loopback
    assert (tracked, reason) == (True, "enabled by mailbox setting" + unreachable)
    assert f"{url}/t/".encode() in raw

    await _set_global(page, url, "on")
    assert inst.mailboxes.global_tracking() is True
    status = await _set_mailbox(page, url, box, "disabled")
    assert "not tracked (disabled by mailbox setting)" in status
    tracked, reason, raw = _send(inst, box)
    assert (tracked, reason) == (False, "disabled by mailbox setting")
    assert b"/t/" not in raw

    # Back to the global setting, which is on: tracked again.
    await _set_mailbox(page, url, box, "global")
    assert _send(inst, box)[:2] == (True, "enabled globally" + unreachable)
    await page.close()


async def test_a_member_cannot_reach_another_mailbox(live_server: LiveServer,
                                                     browser: Any) -> None:
    inst, url = live_server.instance, live_server.url
    mine = inst.store.add_mailbox(MailboxIn(address="support@example.com",
                                            display_name="Support"))
    other = inst.store.add_mailbox(MailboxIn(address="board@example.com",
                                             display_name="Board room"))
    member = inst.accounts.create_user("max@example.com", PASSWORD, name="Max")
    inst.store.set_memberships(member.id, [mine.id])
    page = await browser.new_page()
    await sign_in(page, url, "max@example.com", PASSWORD)

    nav = [t.strip() for t in await page.locator("nav[aria-label=Main] a").all_text_contents()]
    assert "Support" in nav and "Board room" not in nav and "Settings" not in nav

    for path in [f"/mailboxes/{other.id}/conversations", f"/settings/mailboxes/{other.id}",
                 f"/reports?mailbox={other.id}"]:
        response = await page.goto(url + path)
        assert response is not None and response.status == 404, path
        assert await page.text_content("h1") == "Not found"
        content = await page.content()
        assert "Board room" not in content and "board@example.com" not in content

    response = await page.goto(f"{url}/mailboxes/{mine.id}/conversations")
    assert response is not None and response.status == 200
    await page.close()


async def test_settings_and_reports_fit_a_phone_and_keep_the_csp(
        live_server: LiveServer, browser: Any) -> None:
    inst, url = live_server.instance, live_server.url
    inst.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    box = inst.store.add_mailbox(MailboxIn(address="a-rather-long-address@example.com",
                                           display_name="Customer support, Europe"))
    inst.store.add_mailbox(MailboxIn(address="sales@example.com"))
    context = await browser.new_context(viewport={"width": 360, "height": 740})
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text)
            if "Content Security Policy" in m.text else None)
    await sign_in(page, url, "ada@example.com", PASSWORD)
    paths = ["/settings", "/settings/mailboxes", "/settings/users", "/settings/users/new",
             "/reports", f"/reports?mailbox={box.id}&days=90"]
    paths += [f"/settings/mailboxes/{box.id}?tab={t}"
              for t in ("general", "sending", "receiving", "misc")]
    for path in paths:
        response = await page.goto(url + path)
        assert response is not None and response.status == 200, path
        wide = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert wide <= 0, f"{path} scrolls sideways by {wide}px at phone width"
    assert problems == []
    # The charts carry their numbers for screen readers.
    await page.goto(f"{url}/reports")
    labels = await page.eval_on_selector_all("figure svg[role=img]",
                                             "els => els.map(e => e.getAttribute('aria-label'))")
    assert len(labels) == 3 and all(labels)
    await context.close()
