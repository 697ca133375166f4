"""Messages made ready to show once, off the event loop, within bounds: the pixel answers
while a mail is being sanitised, the result is stored and served from storage, mail too
complex to show says so and offers the download, and downloads with any name work."""

from __future__ import annotations

import threading
from email.message import EmailMessage
from urllib.parse import unquote

import httpx
from bs4 import BeautifulSoup

from mailseen.core.mailbody import Display
from mailseen.core.tokens import TokenRef
from mailseen.records import MailboxIn, MailboxRecord, MessageRecord
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance
from mailseen.web.site.display import DISPLAY_VERSION, render_display

from .conftest import LiveServer
from .test_mailbody import nested_mail
from .web_client import PASSWORD, WebClient


def _mailbox(instance: Instance) -> MailboxRecord:
    return instance.store.add_mailbox(MailboxIn("support@example.com", tracking="enabled"))


def _admin(instance: Instance) -> str:
    instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    return "ada@example.com"


def _mail(html: str | None = None, text: str = "Hello", name: str = "1",
          attachment: tuple[str, bytes] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "customer@example.org"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Question"
    msg["Message-ID"] = f"<{name}@example.org>"
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(attachment[1], maintype="application", subtype="pdf",
                           filename=attachment[0])
    return msg.as_bytes()


def _receive(instance: Instance, box: MailboxRecord, raw: bytes,
             ingestor: Ingestor | None = None) -> MessageRecord:
    ingestor = ingestor or Ingestor(instance.store, instance.sender)
    return ingestor.ingest(box, raw, "smtp").message


def _sign_in(client: httpx.Client, email: str) -> None:
    page = BeautifulSoup(client.get("/login").text, "html.parser")
    csrf = page.select_one("input[name=csrf]")
    assert csrf is not None
    resp = client.post("/login", data={"email": email, "password": PASSWORD,
                                       "csrf": str(csrf["value"])})
    assert resp.status_code == 303 and resp.headers["location"] != "/login"


def test_the_pixel_answers_while_a_message_is_being_sanitised(live_server: LiveServer) -> None:
    inst = live_server.instance
    box = _mailbox(inst)
    email = _admin(inst)
    received = _receive(inst, box, _mail('<p>Hi</p><img src="https://images.example/gate.png">'))
    sent = inst.sender.submit(box, b"From: support@example.com\r\nTo: bob@example.org\r\n"
                                   b"Content-Type: text/html\r\n\r\n<p>Hi</p>\r\n")
    token = inst.signer.make(TokenRef(sent.id))
    # The sanitiser asks whether each image is our pixel: hold it there, mid-sanitise, until
    # the pixel has been answered. On the event loop it would hold the whole server (the
    # wait gives up eventually, so that such a server fails this test instead of hanging).
    sanitising, done = threading.Event(), threading.Event()
    pixel_during_sanitise: list[bool] = []
    is_own_pixel = inst.sender.is_own_pixel

    def held(url: str) -> bool:
        if "gate.png" in url:
            sanitising.set()
            done.wait(10)
            pixel_during_sanitise.append(done.is_set())
        return is_own_pixel(url)

    inst.sender.is_own_pixel = held  # type: ignore[method-assign]
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        _sign_in(client, email)
        result: list[httpx.Response] = []
        opener = threading.Thread(
            target=lambda: result.append(client.get(f"/messages/{received.id}/body")))
        opener.start()
        assert sanitising.wait(30)
        pixel = httpx.get(f"{live_server.url}/t/{token}.gif", timeout=30)
        assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
        done.set()
        opener.join(30)
    assert pixel_during_sanitise[0] is True  # answered while the sanitiser was held
    assert result[0].status_code == 200


def test_a_message_is_sanitised_once_and_then_served_as_stored(web: WebClient,
                                                              instance: Instance) -> None:
    box = _mailbox(instance)
    received = _receive(instance, box, _mail("<p>Original <b>text</b></p>"))
    web.sign_in(_admin(instance))
    assert instance.store.get_display(received.id) is None
    assert "Original" in web.client.get(f"/messages/{received.id}/body").text
    stored = instance.store.get_display(received.id)
    assert stored is not None and stored.version == DISPLAY_VERSION
    # What is served now comes from storage, not from sanitising again.
    instance.store.put_display(received.id, Display(
        DISPLAY_VERSION, "<p>Stored copy</p>", None, None, 0, []))
    assert "Stored copy" in web.client.get(f"/messages/{received.id}/body").text
    # Made by older rules: made again.
    instance.store.put_display(received.id, Display(
        DISPLAY_VERSION - 1, "<p>Old rules</p>", None, None, 0, []))
    assert "Original" in web.client.get(f"/messages/{received.id}/body").text


def test_received_mail_is_sanitised_as_it_arrives(instance: Instance) -> None:
    box = _mailbox(instance)
    ingestor = Ingestor(instance.store, instance.sender, render=render_display)
    html = '<p onclick="x()">Hi</p><img src="https://images.example/a.png"><script>x()</script>'
    received = _receive(instance, box, _mail(html), ingestor)
    shown = instance.store.get_display(received.id)
    assert shown is not None
    assert shown.html is not None and "script" not in shown.html and "onclick" not in shown.html
    assert shown.blocked_images == 1 and "images.example" not in shown.html
    assert shown.html_images is not None and "https://images.example/a.png" in shown.html_images


def test_the_100000_div_mail_is_shown_flattened(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    html = "<div>" * 100_000 + "deep text" + "</div>" * 100_000
    received = _receive(instance, box, _mail(html))
    web.sign_in(_admin(instance))
    page = web.get(f"/conversations/{received.conversation_id}")
    assert "flattened" in page.text(".body-note")
    body = web.client.get(f"/messages/{received.id}/body")
    assert "deep text" in body.text
    assert body.text.count("<div>") <= 200


def test_mime_too_complex_to_read_says_so_and_offers_the_download(
        web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    raw = nested_mail(1000)
    received = _receive(instance, box, raw)
    web.sign_in(_admin(instance))
    page = web.get(f"/conversations/{received.conversation_id}")
    assert "too complex to display safely" in page.text(".body-note")
    [link] = page.soup.select(".body-note a")
    resp = web.client.get(link["href"])
    assert resp.status_code == 200 and resp.content == raw
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"].startswith("attachment;")


def test_an_attachment_named_in_cyrillic_downloads_under_its_name(
        web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    received = _receive(instance, box, _mail(attachment=("файл.pdf", b"%PDF-1.4 x")))
    web.sign_in(_admin(instance))
    page = web.get(f"/conversations/{received.conversation_id}")
    [link] = page.soup.select(".attachments a")
    assert link.text == "файл.pdf"
    resp = web.client.get(link["href"])
    assert resp.status_code == 200 and resp.content == b"%PDF-1.4 x"
    disposition = resp.headers["content-disposition"]
    assert disposition.isascii()
    fallback, encoded = disposition.split("; ")[1:]
    assert fallback == 'filename="pdf"'  # an ASCII stand-in for old clients
    assert encoded.startswith("filename*=UTF-8''")
    assert unquote(encoded.removeprefix("filename*=UTF-8''")) == "файл.pdf"


def test_a_body_with_nul_characters_is_stored_and_shown(web: WebClient,
                                                        instance: Instance) -> None:
    box = _mailbox(instance)
    raw = (b"From: customer@example.org\r\nTo: support@example.com\r\nSubject: nul\r\n"
           b"Message-ID: <nul@example.org>\r\nContent-Type: text/plain\r\n\r\n"
           b"before\x00after\r\n")
    received = _receive(instance, box, raw, Ingestor(instance.store, instance.sender,
                                                     render=render_display))
    shown = instance.store.get_display(received.id)  # PostgreSQL text holds no NUL
    assert shown is not None and shown.text == "before\ufffdafter\r\n"
    web.sign_in(_admin(instance))
    assert "before\ufffdafter" in web.get(f"/conversations/{received.conversation_id}").text(
        "pre.plain")
