"""End to end in real headless Chromium against the real server (delivery worker on, mail
written to the outbox): a team member composes and sends; the recipient, in a browser of
their own, opens the delivered message and the pixel loads; the listing's eye turns to
"viewed" live; the conversation shows the view. Then what must never happen: the team's own
reading counting as a view, and a hostile message running anything."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from mailseen.core.compose import Draft
from mailseen.core.tokens import TokenRef
from mailseen.records import MailboxIn, MailboxRecord
from mailseen.services.inbound import Ingestor

from .browser import sign_in
from .conftest import LiveServer, backdate_sent, eventually
from .web_client import PASSWORD

DESKTOP_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")
ADMIN = "ada@example.com"


@pytest.fixture
async def live(tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    server = LiveServer(tmp_path, database_url).start()
    server.instance.accounts.create_user(ADMIN, PASSWORD, role="admin")
    yield server
    await asyncio.to_thread(server.stop)


def _mailbox(live: LiveServer, address: str, tracking: str) -> MailboxRecord:
    return live.instance.store.add_mailbox(MailboxIn(
        address=address, display_name=address.split("@")[0].title(),
        tracking=tracking))  # type: ignore[arg-type]


async def _delivered(live: LiveServer, message_id: int) -> EmailMessage:
    """The .eml the delivery worker wrote to the outbox for ``message_id``."""
    for _ in range(400):
        # One file per copy: "-ID.eml" for one copy to all, "-ID-N.eml" for recipient N's.
        found = [*live.settings.outbox_dir.glob(f"*-{message_id}.eml"),
                 *live.settings.outbox_dir.glob(f"*-{message_id}-1.eml")]
        if found:
            msg = email.message_from_bytes(found[0].read_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            return msg
        await asyncio.sleep(0.025)
    raise AssertionError("the message was not delivered to the outbox")


async def _team_page(browser: Any, live: LiveServer, **options: Any) -> Any:
    context = await browser.new_context(**options)
    page = await context.new_page()
    await sign_in(page, live.url, ADMIN, PASSWORD)
    return page


def _elsewhere(live: LiveServer) -> str:
    """The test server under a name that is not its public URL's: a remote site to the
    message frame, which never loads images from our own hosts."""
    return f"http://localhost:{live.port}"


def _requests(page: Any) -> list[str]:
    """Every URL the page's context asks for from now on, frames included."""
    seen: list[str] = []
    page.context.on("request", lambda r: seen.append(r.url))
    return seen


async def test_compose_send_open_and_watch_the_eye_turn_live(
        live: LiveServer, browser: Any) -> None:
    quiet = _mailbox(live, "noreply@example.com", "disabled")
    support = _mailbox(live, "support@example.com", "enabled")
    page = await _team_page(browser, live)
    errors: list[object] = []
    page.on("pageerror", lambda e: errors.append(e))

    # Compose: the preview follows the mailbox and the message, without a round trip.
    await page.goto(f"{live.url}/compose")
    preview = page.locator("#tracking-preview")
    await page.select_option("#mailbox", str(quiet.id))
    await expect(preview).to_have_text("Tracking off (mailbox setting)")
    await page.select_option("#mailbox", str(support.id))
    await expect(preview).to_have_text("Tracking on (mailbox setting)")
    await expect(page.locator("button[value=preview]")).to_be_hidden()  # script does it
    await page.click("details summary")
    await page.fill("#text", "Only text")
    await expect(preview).to_have_text("Not trackable: plain text")
    await page.fill("#text", "")

    await page.fill("#to", "Carla <carla@example.org>")
    await page.fill("#subject", "Your new printer")
    await page.click(".editor")
    await page.keyboard.type("Hello Carla, it ships ")
    await page.click("button[aria-label=Bold]")
    await page.keyboard.type("today")
    await expect(preview).to_have_text("Tracking on (mailbox setting)")
    await page.click("button[value=send]")
    await page.wait_for_url("**/conversations/*")

    article = page.locator("article[data-message-id]")
    message_id = int(await article.get_attribute("data-message-id") or 0)
    sent = live.instance.store.get_message(message_id)
    assert sent.tracked and sent.tracking_reason == ("enabled by mailbox setting; the pixel "
                                                     f"URL {live.url} is not reachable by "
                                                     "recipients")
    delivered = await _delivered(live, message_id)
    # Sent only once the worker handed it over: never "sent" before.
    await eventually(lambda: live.instance.store.get_message(message_id).status == "sent")
    await page.reload()
    await expect(article.locator(".status")).to_have_attribute("data-kind", "waiting")
    assert delivered["To"] == "Carla <carla@example.org>"
    plain = delivered.get_body(preferencelist=("plain",))
    assert plain is not None and "Hello Carla, it ships today" in plain.get_content()
    html_part = delivered.get_body(preferencelist=("html",))
    assert html_part is not None
    html = str(html_part.get_content())
    assert "<b>today</b>" in html and f"{live.url}/t/" in html

    # The team watches the listing; the page is never reloaded.
    await page.goto(f"{live.url}/conversations")
    row = f'[data-conversation-id="{sent.conversation_id}"]'
    await page.wait_for_selector(f"{row} .status-waiting")
    await page.evaluate("window.stillTheSamePage = true")

    # The recipient, in a browser of their own, opens it a while after delivery (hits
    # within two seconds of sending are judged automatic).
    backdate_sent(live.instance, message_id, 60)
    recipient = await browser.new_context(user_agent=DESKTOP_CHROME)
    reader = await recipient.new_page()
    async with reader.expect_response(lambda r: "/t/" in r.url) as pixel:
        await reader.set_content(html)
    assert (await pixel.value).status == 200
    await recipient.close()

    await page.wait_for_selector(f"{row} .status-viewed", timeout=15_000)
    assert await page.evaluate("window.stillTheSamePage") is True
    label = await page.locator(f"{row} .status svg").get_attribute("aria-label")
    assert label is not None and label.startswith("Viewed")

    # The conversation shows the view, the client in words, and (to an admin) the address.
    await page.goto(f"{live.url}/conversations/{sent.conversation_id}")
    await expect(page.locator(".views-human .count")).to_have_text("1")
    await expect(page.locator(".views-machine .count")).to_have_text("0")
    event = page.locator(".timeline .event-human")
    await expect(event.locator(".verdict")).to_have_text("Viewed")
    await expect(event.locator(".client")).to_contain_text("Chrome")
    await expect(event.locator(".ip")).to_have_text("IP 127.0.0.1")
    assert errors == []


async def test_the_team_reading_its_sent_mail_never_counts_as_a_view(
        live: LiveServer, browser: Any) -> None:
    box = _mailbox(live, "support@example.com", "enabled")
    sent = live.instance.sender.send_draft(box, Draft(
        from_addr=box.address, to=["carla@example.org"], subject="Tracked",
        html=f'<p>Hello</p><img src="{_elsewhere(live)}/static/probe.png" alt="remote picture">'))
    assert sent.tracked
    await _delivered(live, sent.id)
    backdate_sent(live.instance, sent.id, 60)

    page = await _team_page(browser, live, user_agent=DESKTOP_CHROME)
    seen = _requests(page)
    await page.goto(f"{live.url}/conversations/{sent.conversation_id}")
    frame = page.frame_locator("iframe.mail-frame")
    await expect(frame.locator("p")).to_have_text("Hello")
    assert not any("/static/probe.png" in u for u in seen)  # remote images wait to be asked
    async with page.expect_request(lambda r: "/static/probe.png" in r.url):
        await page.click("text=Show images")  # now they load...
    await expect(frame.locator("img")).to_have_attribute(
        "src", f"{_elsewhere(live)}/static/probe.png")
    assert not any("/t/" in u for u in seen)  # ...and our pixel never does
    await asyncio.sleep(0.5)  # anything in flight would be recorded by now
    assert live.instance.store.list_views(sent.id) == []
    assert live.instance.store.get_message(sent.id).view_count == 0


async def test_quoted_pixels_in_a_reply_never_count_even_with_images_shown(
        live: LiveServer, browser: Any) -> None:
    box = _mailbox(live, "support@example.com", "enabled")
    sent = live.instance.sender.send_draft(box, Draft(
        from_addr=box.address, to=["carla@example.org"], subject="Tracked", html="<p>Hi</p>"))
    await _delivered(live, sent.id)
    backdate_sent(live.instance, sent.id, 60)
    token = live.instance.signer.make(TokenRef(sent.id))
    ours, alias = live.url, _elsewhere(live)  # the same server: the public name and another
    # Our pixel, quoted in forms a browser fetches but a plain /t/<token>.gif match misses.
    quoted = f"""<html><head>
<style class="q">.q {{ background-image: url({ours}/t/{token}.gif) }}</style>
<style>.r {{ background-image: \\75 rl({ours}/t/./{token}.gif) }}</style></head><body>
<p class="q">Thanks, it works now.</p><p class="r">Carla</p>
<blockquote><p>Hi</p>
<img src="{ours}/t/./{token}.gif" alt="dot segment">
<img src="{ours}\\t\\{token}.gif" alt="backslashes">
<img src="{ours}/t/{token[:4]}&#9;{token[4:]}.gif" alt="tab">
<img src="{alias}/t/%2e/{token}.gif" alt="another name">
<div style="background-image: url({ours}/t/{token}.gif)">x</div>
<div style="background: \\75 rl({alias}/t/{token}.gif)">y</div>
</blockquote><img src="{alias}/probe/remote-image" alt="a picture"></body></html>"""
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "carla@example.org", box.address, "Re: Tracked"
    reply["Message-ID"], reply["In-Reply-To"] = "<reply@example.org>", sent.message_id
    reply.set_content("Thanks, it works now.")
    reply.add_alternative(quoted, subtype="html")
    Ingestor(live.instance.store, live.instance.sender).ingest(box, reply.as_bytes(), "smtp")

    page = await _team_page(browser, live, user_agent=DESKTOP_CHROME)
    seen = _requests(page)
    await page.goto(f"{live.url}/conversations/{sent.conversation_id}")
    async with page.expect_request(lambda r: "/probe/remote-image" in r.url):
        await page.click("text=Show images")
    shown = next(f for f in page.frames if "images=1" in f.url)
    await shown.wait_for_load_state("load")  # every image and background it asks for is done
    await expect(shown.locator("p.q")).to_have_text("Thanks, it works now.")
    assert [u for u in seen if "/t/" in u] == []
    assert live.instance.store.list_views(sent.id) == []


async def test_a_hostile_message_is_shown_without_running_anything(
        live: LiveServer, browser: Any) -> None:
    box = _mailbox(live, "support@example.com", "enabled")
    probe = f"{_elsewhere(live)}/probe"
    hostile = f"""<html><head>
<meta http-equiv="refresh" content="0;url={probe}/refresh">
<link rel="stylesheet" href="{probe}/link-css">
<style>@import url({probe}/css-import); p {{ background: url({probe}/css-bg) }}</style>
</head><body onload="fetch('{probe}/body-onload')">
<h1>You won</h1>
<p style="background-image: url({probe}/inline-css)">Claim your prize.</p>
<script>fetch("{probe}/script"); parent.document.title = "pwned";</script>
<img src="nothing" onerror="fetch('{probe}/onerror')">
<img src="{probe}/remote-image">
<svg width="10" height="10" onload="fetch('{probe}/svg')">
<script>fetch('{probe}/svg-script')</script><image href="{probe}/svg-image"/></svg>
<a id="js" href="javascript:fetch('{probe}/js-link')">Click here</a>
<form action="{probe}/form" method="get"><input name="q" value="1"><button>Go</button>
</form>
<iframe src="{probe}/iframe"></iframe><object data="{probe}/object"></object>
<embed src="{probe}/embed"><details open ontoggle="fetch('{probe}/toggle')">x</details>
<video poster="{probe}/poster"></video><audio src="{probe}/audio"></audio>
</body></html>"""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "prize@evil.example", box.address, "You won"
    msg["Message-ID"] = "<hostile@evil.example>"
    msg.set_content("You won")
    msg.add_alternative(hostile, subtype="html")
    got = Ingestor(live.instance.store, live.instance.sender).ingest(
        box, msg.as_bytes(), "smtp").message

    page = await _team_page(browser, live)
    seen = _requests(page)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    url = f"{live.url}/conversations/{got.conversation_id}"
    await page.goto(url)
    title = await page.title()
    frame = page.frame_locator("iframe.mail-frame")
    await expect(frame.locator("h1")).to_have_text("You won")
    await expect(frame.locator("a")).to_have_text("Click here")
    await frame.locator("a").click()  # its javascript: address is gone
    for tag in ("script", "svg", "form", "iframe", "object", "embed", "video", "audio",
                "meta[http-equiv]", "link"):
        assert await frame.locator(tag).count() == 0, tag
    await page.wait_for_timeout(1500)  # time for a refresh, a toggle, a late script

    assert [u for u in seen if "/probe" in u] == []
    assert dialogs == []
    assert page.url == url and await page.title() == title
    # Even with images shown, only the image loads: nothing else runs or fetches.
    async with page.expect_request(lambda r: "/probe/remote-image" in r.url):
        await page.click("text=Show images")
    await expect(frame.locator("img[src]")).to_have_count(1)
    await page.wait_for_timeout(1000)
    assert [u for u in seen if "/probe" in u] == [f"{probe}/remote-image"]


async def test_the_pages_fit_a_phone_and_work_from_the_keyboard(
        live: LiveServer, browser: Any) -> None:
    box = _mailbox(live, "support@example.com", "enabled")
    sent = live.instance.sender.send_draft(box, Draft(
        from_addr=box.address, to=["carla@example.org"], subject="A rather long subject "
        "line that has to wrap on a phone screen", html="<p>Hello</p>"))
    page = await _team_page(browser, live, viewport={"width": 375, "height": 740},
                            is_mobile=True, has_touch=True)
    for path in (f"/conversations/{sent.conversation_id}", "/compose",
                 f"/conversations/{sent.conversation_id}/reply"):
        await page.goto(live.url + path)
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 375, f"{path} is {wide}px wide"

    # Keyboard only: from the To field, Tab reaches the editor and then Send.
    await page.goto(f"{live.url}/compose")
    await page.focus("#to")
    await page.keyboard.type("carla@example.org")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")  # Bcc, Subject
    await page.keyboard.type("By keyboard")
    order: list[str] = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate(
            "document.activeElement.className || document.activeElement.id || "
            "document.activeElement.textContent"))
        if order[-1] == "editor":
            break
    assert order[-1] == "editor", order
    await page.keyboard.type("Typed without a mouse")
    for _ in range(12):  # a few presses, not a search of the whole page
        if (await page.evaluate("document.activeElement.value")) == "send":
            break
        await page.keyboard.press("Tab")
    else:
        raise AssertionError("Tab never reached Send")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/conversations/*")
    [reply] = [m for m in live.instance.store.list_messages() if m.subject == "By keyboard"]
    assert reply.to == ["carla@example.org"]
