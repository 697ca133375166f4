"""Live pages in real headless Chromium against the real server, never reloaded: an open
conversation takes in each recipient's view (real fetches of their copies' pixels), a reply,
and the team's follow-up from queued (with its Retry form) to sent (without), keeping its
scroll position, its loaded message frame and a timeline the user closed; the listing takes
in a new inbound conversation and a reply while a search is being typed; notifications are
turned on and off per browser and clicking one opens the conversation.

A headless browser shows no notifications one could click, so the page's Notification is
wrapped to keep each one it makes, and the click is dispatched to it: what is tested is the
handler the page attaches, which is what an operating system's click runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from mailseen.core.compose import Draft
from mailseen.core.tokens import TokenRef
from mailseen.records import MailboxIn, MailboxRecord, MessageRecord
from mailseen.services.inbound import Ingestor

from .browser import sign_in
from .conftest import LiveServer, backdate_sent
from .web_client import PASSWORD

ADMIN = "ada@example.com"
LIVE = 15_000  # ms: a poll every two seconds, then the page fetched again
# Two recipients' mail programs: different clients, so neither repeats the other.
READERS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Safari/537.36",
           "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like "
           "Gecko) Version/17.5 Safari/605.1.15")

# Keeps every notification the page makes, so the test can click it.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  if (!Real) return;
  window.madeNotifications = [];
  window.Notification = class extends Real {
    constructor(title, options) {
      super(title, options);
      window.madeNotifications.push(this);
    }
  };
})();
"""


@pytest.fixture
async def live(tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    # No delivery worker: the test moves a copy through its states itself, as the worker
    # would, so each state is on screen for certain.
    server = LiveServer(tmp_path, database_url, worker=False).start()
    server.instance.accounts.create_user(ADMIN, PASSWORD, role="admin")
    yield server
    await asyncio.to_thread(server.stop)


def _mailbox(live: LiveServer) -> MailboxRecord:
    return live.instance.store.add_mailbox(MailboxIn(
        address="sales@example.com", display_name="Sales", tracking="enabled"))


def _sent(live: LiveServer, box: MailboxRecord, subject: str,
          to: tuple[str, ...] = ("carla@example.org",)) -> MessageRecord:
    """A tracked message, sent a while ago (an open within seconds is judged automatic)."""
    sent = live.instance.sender.send_draft(box, Draft(
        from_addr=box.address, to=list(to), subject=subject,
        html="<p>Our quote</p>" + "<p>Details</p>" * 40))
    assert sent.tracked
    backdate_sent(live.instance, sent.id, 60)
    return sent


def _receive(live: LiveServer, box: MailboxRecord, subject: str, n: int,
             reply_to: MessageRecord | None = None) -> MessageRecord:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "carla@example.org", box.address, subject
    msg["Message-ID"] = f"<live-{n}@example.org>"
    if reply_to is not None:
        msg["In-Reply-To"] = reply_to.message_id
    msg.set_content("Thanks, that works for us.")
    return Ingestor(live.instance.store, live.instance.sender).ingest(
        box, msg.as_bytes(), "smtp").message


async def _open_pixel(live: LiveServer, message: MessageRecord, reader: str,
                      recipient: int = 0) -> None:
    """What a recipient's mail program does: fetch the pixel of their copy over HTTP."""
    copy = live.instance.store.copies_of([message.id])[message.id][recipient]
    token = live.instance.signer.make(TokenRef(copy_key=copy.token_key or 0))
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{live.url}/t/{token}.gif", headers={"User-Agent": reader})
    assert resp.status_code == 200


async def _team_page(browser: Any, live: LiveServer, **options: Any) -> Any:
    context = await browser.new_context(**options)
    page = await context.new_page()
    await sign_in(page, live.url, ADMIN, PASSWORD)
    return page


async def test_an_open_conversation_and_the_listing_follow_changes_without_a_reload(
        live: LiveServer, browser: Any) -> None:
    box = _mailbox(live)
    sent = _sent(live, box, "Quote for two", ("erin@example.org", "frank@example.org"))
    page = await _team_page(browser, live, viewport={"width": 1000, "height": 500})
    errors: list[object] = []
    page.on("pageerror", lambda e: errors.append(e))

    # The conversation is open, scrolled down to the message, its frame loaded.
    await page.goto(f"{live.url}/conversations/{sent.conversation_id}")
    article = page.locator(f"#message-{sent.id}")
    await expect(article.locator(".views-human .count")).to_have_text("0")
    frame = page.frame_locator("iframe.mail-frame")
    await expect(frame.locator("p").first).to_have_text("Our quote")
    body = next(f for f in page.frames if "/body" in f.url)
    await body.evaluate("window.loadedOnce = true")
    await page.evaluate("window.stillTheSamePage = true; window.scrollTo(0, 150)")
    on_screen = ("(window.seen = window.seen || document.elementFromPoint(200, 30))"
                 ".isConnected && window.seen.getBoundingClientRect().top")
    top = await page.evaluate(on_screen)

    rows = article.locator("tr.recipient")
    await expect(rows.locator("th")).to_have_text(["erin@example.org", "frank@example.org"])
    await _open_pixel(live, sent, READERS[0], recipient=1)  # frank opens his copy
    await expect(article.locator(".views-human .count")).to_have_text("1", timeout=LIVE)
    await expect(rows.nth(1).locator("td.count").first).to_have_text("1")
    await expect(rows.nth(0).locator("td.count").first).to_have_text("0")
    event = article.locator(".timeline .event-human")
    await expect(event.locator(".verdict")).to_have_text("Viewed")
    await expect(event.locator(".who")).to_have_text("frank@example.org")
    await expect(article.locator(".status")).to_have_attribute("data-kind", "viewed")
    # What was on screen stayed where it was; the frame was not loaded again.
    assert abs(await page.evaluate(on_screen) - top) < 2
    assert await page.evaluate("window.scrollY") > 100
    assert await body.evaluate("window.loadedOnce") is True

    # The user closes the timeline; the next view counts and it stays closed.
    await article.locator(".timeline-box summary").click()
    await _open_pixel(live, sent, READERS[1], recipient=0)  # and erin hers
    await expect(article.locator(".views-human .count")).to_have_text("2", timeout=LIVE)
    await expect(rows.nth(0).locator("td.count").first).to_have_text("1")
    await expect(article.locator(".timeline-box summary")).to_have_text("Timeline: 2 events")
    assert await article.locator(".timeline-box").get_attribute("open") is None

    # A reply arrives: it joins the conversation.
    reply = _receive(live, box, "Re: Quote for two", 1, reply_to=sent)
    await expect(page.locator(f"#message-{reply.id} .msg-who")).to_contain_text(
        "Received from carla@example.org", timeout=LIVE)
    # The team's follow-up, sent from elsewhere (the API, another browser): it joins too,
    # queued, with the admin's "Retry now"; once delivered, its row says so and the form,
    # which nobody was filling in, goes.
    follow_up = live.instance.sender.send_draft(box, Draft(
        from_addr=box.address, to=["erin@example.org"], subject="Re: Quote for two",
        text="Here are the dates.", in_reply_to=reply.message_id))
    article = page.locator(f"#message-{follow_up.id}")
    row = article.locator("tr.recipient")
    await expect(row).to_have_class("recipient recipient-queued", timeout=LIVE)
    await expect(article.locator("form.delivery-actions")).to_have_count(1)
    claim = live.instance.store.claim_next(timedelta(minutes=1))  # as the worker does
    assert claim is not None and claim.message.id == follow_up.id
    live.instance.store.mark_sent(claim.copy.id)
    await expect(row).to_have_class("recipient recipient-sent", timeout=LIVE)
    await expect(article.locator("form.delivery-actions")).to_have_count(0)
    assert await page.evaluate("window.stillTheSamePage") is True

    # The listing, while a search is being typed (not sent yet).
    other = _sent(live, box, "Delivery dates")
    await page.goto(f"{live.url}/conversations")
    await page.evaluate("window.stillTheSamePage = true")
    subjects = page.locator(".conversation .subject")
    await expect(subjects).to_have_text(["Delivery dates", "Quote for two"])
    await page.fill("#q", "carl")
    fresh = _receive(live, box, "A new enquiry", 2)
    await expect(subjects).to_have_text(["A new enquiry", "Delivery dates", "Quote for two"],
                                        timeout=LIVE)
    # A reply brings its conversation to the top, its eye saying so.
    _receive(live, box, "Re: Delivery dates", 3, reply_to=other)
    await expect(subjects).to_have_text(["Delivery dates", "A new enquiry", "Quote for two"],
                                        timeout=LIVE)
    row = page.locator(f"#conversation-{other.conversation_id}")
    await expect(row.locator(".status")).to_have_attribute("data-kind", "viewed")
    assert fresh.conversation_id is not None
    assert await page.evaluate("window.stillTheSamePage") is True
    assert await page.input_value("#q") == "carl"
    assert await page.evaluate("document.activeElement.id") == "q"
    assert errors == []


async def test_notifications_turn_on_and_off_per_browser_and_open_the_conversation(
        live: LiveServer, browser: Any) -> None:
    box = _mailbox(live)
    first = _sent(live, box, "Quote for Carla")
    page = await _team_page(browser, live)
    await page.context.grant_permissions(["notifications"], origin=live.url)
    await page.context.add_init_script(RECORD_NOTIFICATIONS)
    made = "window.madeNotifications.map(n => n.title)"

    # Off until turned on, on any page (this one shows nothing live); remembered.
    await page.goto(f"{live.url}/compose")
    toggle = page.locator(".notify-toggle")
    await expect(toggle).to_have_text("Notifications off")
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await toggle.click()
    await expect(toggle).to_have_text("Notifications on")
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    async with page.expect_response(lambda r: "/live" in r.url):  # its starting cursor
        await page.reload()
    await expect(toggle).to_have_text("Notifications on")

    await _open_pixel(live, first, READERS[0])
    await page.wait_for_function(f"() => {made}.length > 0", timeout=LIVE)
    assert await page.evaluate(made) == ["carla@example.org viewed Quote for Carla"]

    # Clicking it opens the conversation.
    await page.evaluate("window.madeNotifications[0].dispatchEvent(new Event('click'))")
    await page.wait_for_url(f"**/conversations/{first.conversation_id}")

    # Turned off: a view still shows on the page, and no notification comes.
    await expect(toggle).to_have_text("Notifications on")
    await toggle.click()
    await expect(toggle).to_have_text("Notifications off")
    await _open_pixel(live, first, READERS[1])
    await expect(page.locator(".views-human .count")).to_have_text("2", timeout=LIVE)
    assert await page.evaluate(made) == []

