"""Compose and reply through the real pages: the form, the tracking preview it shows before
sending, what is sent, what survives a refused form, and who may send from where."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from mailseen.core.compose import Draft
from mailseen.records import MailboxIn, MailboxRecord, MessageRecord
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance
from mailseen.web.site.mailhtml import html_to_text

from .conftest import stored_as_sent_before_copies
from .web_client import PASSWORD, Page, WebClient


def _mailbox(instance: Instance, address: str = "support@example.com",
             tracking: str = "global") -> MailboxRecord:
    return instance.store.add_mailbox(MailboxIn(address=address, display_name="Support",
                                                tracking=tracking))  # type: ignore[arg-type]


def _member(instance: Instance, web: WebClient, *boxes: MailboxRecord) -> None:
    user = instance.accounts.create_user("m@example.com", PASSWORD)
    instance.store.set_memberships(user.id, [b.id for b in boxes])
    web.sign_in("m@example.com")


def _parsed(instance: Instance, message_id: int) -> EmailMessage:
    msg = email.message_from_bytes(instance.store.get_raw(message_id),
                                   policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _sent(instance: Instance) -> MessageRecord:
    [message] = [m for m in instance.store.list_messages() if m.direction == "out"]
    return message


def _post(web: WebClient, page: Page, action: str, files: list[tuple[str, tuple[str, bytes,
          str]]] | None = None, **fields: str) -> Page:
    data = {**page.form(action), **fields}
    data.pop("attachments", None)
    return Page(web.client.post(action, data=data, files=files or []))


def _receive(instance: Instance, box: MailboxRecord, html: str | None) -> MessageRecord:
    msg = EmailMessage()
    msg["From"] = "Carla Customer <carla@example.org>"
    msg["To"] = box.address
    msg["Subject"] = "Broken printer"
    msg["Message-ID"] = "<q1@example.org>"
    msg["References"] = "<q0@example.org>"
    msg.set_content("It is broken.\nPlease help.")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return Ingestor(instance.store, instance.sender).ingest(box, msg.as_bytes(), "imap").message


# -- the form ---------------------------------------------------------------------------

def test_the_form_offers_only_the_users_mailboxes(web: WebClient, instance: Instance) -> None:
    mine = _mailbox(instance, tracking="enabled")
    other = _mailbox(instance, "sales@example.com", tracking="disabled")
    _mailbox(instance, "hidden@example.com")
    user = instance.accounts.create_user("m@example.com", PASSWORD)
    instance.store.set_memberships(user.id, [mine.id, other.id])
    web.sign_in("m@example.com")

    page = web.get("/compose")
    assert page.status == 200
    options = page.all("select#mailbox option")
    # The preview for each mailbox rides on its option for the script; the selected one is
    # worked out by the server too, so it is right without JavaScript.
    assert {o["value"]: o["data-tracking-words"] for o in options} == {
        str(mine.id): "Tracking on (mailbox setting)",
        str(other.id): "Tracking off (mailbox setting)"}
    page = web.get(f"/compose?mailbox={mine.id}")
    assert page.text("#tracking-preview") == "Tracking on (mailbox setting)"
    page = web.get(f"/compose?mailbox={other.id}")
    assert page.text("#tracking-preview") == "Tracking off (mailbox setting)"
    for name in ("csrf", "to", "cc", "bcc", "subject", "html", "text"):
        assert name in page.form("/compose")
    assert page.soup.select_one("form[action='/compose']")["enctype"] == "multipart/form-data"
    assert page.soup.select_one("input[type=file][name=attachments][multiple]") is not None
    for field in page.all("input:not([type=hidden]), select, textarea"):  # all labelled
        assert page.soup.select_one(f"label[for='{field['id']}']") is not None


@pytest.mark.parametrize(("global_on", "mode", "html", "words"), [
    (True, "global", "<p>Hi</p>", "Tracking on (global setting)"),
    (False, "global", "<p>Hi</p>", "Tracking off (global setting)"),
    (False, "enabled", "<p>Hi</p>", "Tracking on (mailbox setting)"),
    (True, "disabled", "<p>Hi</p>", "Tracking off (mailbox setting)"),
    (True, "global", "", "Not trackable: plain text"),
    (True, "enabled", "<p><br></p>", "Not trackable: plain text"),
])
def test_the_preview_says_what_tracking_will_do_and_why(
        web: WebClient, instance: Instance, global_on: bool, mode: str, html: str,
        words: str) -> None:
    instance.mailboxes.set_global_tracking(None, global_on)
    box = _mailbox(instance, tracking=mode)
    _member(instance, web, box)
    page = web.get("/compose")
    # Without JavaScript, "Update tracking preview" asks the server, keeping what was typed.
    page = _post(web, page, "/compose", do="preview", html=html, text="Hi", to="a@example.org")
    assert page.status == 200
    assert page.text("#tracking-preview") == words
    assert page.form("/compose")["to"] == "a@example.org"
    assert instance.store.list_messages() == []


def test_members_without_a_mailbox_are_told_why(web: WebClient, instance: Instance) -> None:
    _mailbox(instance)
    _member(instance, web)
    page = web.get("/compose")
    assert "not a member of any mailbox" in page.text("main")
    assert page.soup.select_one("form[action='/compose']") is None


# -- sending ----------------------------------------------------------------------------

def test_sending_html_with_a_generated_text_and_attachments(web: WebClient,
                                                           instance: Instance) -> None:
    instance.mailboxes.set_global_tracking(None, True)
    box = _mailbox(instance)
    _member(instance, web, box)
    page = web.get("/compose")
    page = _post(web, page, "/compose",
                 files=[("attachments", ("notes.txt", b"hello", "text/plain")),
                        ("attachments", ("scan.pdf", b"%PDF-1.4", "application/pdf"))],
                 to='"Doe, Jane" <jane@example.org>, bob@example.org', cc="cc@example.org",
                 bcc="secret@example.org", subject="Quote",
                 html='<p>Dear Jane,</p><p>See <a href="https://x.example/q">the quote</a>.</p>')
    sent = _sent(instance)
    assert page.response.url.path == f"/conversations/{sent.conversation_id}"
    assert page.response.history[0].status_code == 303
    assert sent.tracked and sent.tracking_reason == (
        "enabled globally; the pixel URL http://127.0.0.1:8000 is not reachable by recipients")
    assert sent.source == "web"
    assert sorted(sent.envelope_to) == sorted(["jane@example.org", "bob@example.org",
                                               "cc@example.org", "secret@example.org"])
    msg = _parsed(instance, sent.id)
    assert msg["To"] == '"Doe, Jane" <jane@example.org>, bob@example.org'
    assert msg["Bcc"] is None
    assert msg["From"] == "Support <support@example.com>"
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None
    assert _lf(text.get_content()) == "Dear Jane,\n\nSee the quote (https://x.example/q).\n"
    assert [(a.get_filename(), a.get_content_type(), a.get_content())
            for a in msg.iter_attachments()] == [("notes.txt", "text/plain", "hello"),
                                                 ("scan.pdf", "application/pdf", b"%PDF-1.4")]


def test_plain_text_only_is_sent_untracked_as_the_preview_said(web: WebClient,
                                                              instance: Instance) -> None:
    instance.mailboxes.set_global_tracking(None, True)
    box = _mailbox(instance)
    _member(instance, web, box)
    page = web.get("/compose")
    _post(web, page, "/compose", to="a@example.org", subject="Hi", html="", text="Just text")
    sent = _sent(instance)
    assert not sent.tracked and sent.tracking_reason == "not trackable: plain text"
    msg = _parsed(instance, sent.id)
    assert msg.get_content_type() == "text/plain"
    assert _lf(msg.get_content()) == "Just text\n"


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"to": "jane at example"}, "to", "To: 'jane at example' is not an email address."),
    ({"to": "a@example.org b@example.org"}, "to", "To: separate addresses with commas."),
    ({"to": ""}, "to", "To: add at least one recipient."),
    ({"cc": "nope"}, "cc", "Cc: 'nope' is not an email address."),
    ({"html": "<p> </p>", "text": ""}, "html", "Message: write something to send."),
])
def test_refused_forms_say_why_and_keep_everything(
        web: WebClient, instance: Instance, fields: dict[str, str], field: str,
        message: str) -> None:
    box = _mailbox(instance)
    _member(instance, web, box)
    page = web.get("/compose")
    typed = {"to": "jane@example.org", "subject": "Quote", "html": "<p>Hi <b>Jane</b></p>",
             "text": "Hi Jane", **fields}
    page = _post(web, page, "/compose", files=[("attachments", ("a.txt", b"kept", "text/plain"))],
                 **typed)
    assert page.status == 422
    assert page.text("#form-error") == message
    assert page.soup.select_one(f"#{field}")["aria-invalid"] == "true"
    form = page.form("/compose")
    for name, value in typed.items():
        assert form[name] == value
    assert instance.store.list_messages() == []
    # The upload comes back as a checked box; sending again, fixed, keeps it.
    [kept] = page.all("input[name=kept]")
    assert kept.has_attr("checked") and "a.txt" in page.text(".kept")
    page = _post(web, page, "/compose", to="jane@example.org", cc="", html=typed["html"],
                 text="Hi Jane")
    assert page.status == 200
    msg = _parsed(instance, _sent(instance).id)
    assert [a.get_filename() for a in msg.iter_attachments()] == ["a.txt"]


def test_sending_from_another_mailbox_is_404(web: WebClient, instance: Instance) -> None:
    mine, theirs = _mailbox(instance), _mailbox(instance, "sales@example.com")
    _member(instance, web, mine)
    assert web.get(f"/compose?mailbox={theirs.id}").status == 404
    page = web.get("/compose")
    page = _post(web, page, "/compose", mailbox=str(theirs.id), to="a@example.org",
                 html="<p>x</p>")
    assert page.status == 404
    assert instance.store.list_messages() == []


def test_the_form_needs_its_csrf_token(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    _member(instance, web, box)
    resp = web.client.post("/compose", data={"mailbox": str(box.id), "to": "a@example.org",
                                             "html": "<p>x</p>", "csrf": "forged"})
    assert resp.status_code == 403
    assert instance.store.list_messages() == []


# -- replies ----------------------------------------------------------------------------

def test_a_reply_is_threaded_and_quotes_the_message(web: WebClient, instance: Instance) -> None:
    instance.mailboxes.set_global_tracking(None, True)
    box = _mailbox(instance)
    asked = _receive(instance, box, '<p>It is <b>broken</b>.</p><img src="https://e.example/p'
                                    '.png" alt="photo"><script>alert(1)</script>')
    _member(instance, web, box)
    page = web.get(f"/conversations/{asked.conversation_id}")
    page = web.get(page.soup.select_one(".bar a.button")["href"])
    action = f"/conversations/{asked.conversation_id}/reply"
    form = page.form(action)
    assert form["to"] == "carla@example.org"
    assert form["subject"] == "Re: Broken printer"
    assert form["reply_to"] == str(asked.id)
    assert page.text("#tracking-preview") == "Tracking on (global setting)"
    quote = form["html"]
    assert "wrote:" in quote and "<blockquote" in quote and "<b>broken</b>" in quote
    assert "<script" not in quote
    assert 'src="https://e.example/p.png"' in quote  # for the recipient; our page's CSP
    # keeps it from loading in the editor

    page = _post(web, page, action, html="<p>Fixed it.</p>" + quote)
    reply = _sent(instance)
    assert page.response.url.path == f"/conversations/{asked.conversation_id}"
    assert reply.conversation_id == asked.conversation_id
    msg = _parsed(instance, reply.id)
    assert msg["In-Reply-To"] == "<q1@example.org>"
    assert msg["References"] == "<q0@example.org> <q1@example.org>"
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None
    assert "Fixed it.\n\nOn " in _lf(text.get_content())
    assert "\n> It is broken.\n" in _lf(text.get_content())


def test_quoting_our_own_tracked_message_leaves_its_pixel_out(web: WebClient,
                                                              instance: Instance) -> None:
    box = _mailbox(instance, tracking="enabled")
    first = instance.sender.send_draft(box, Draft(
        from_addr=box.address, to=["c@example.org"], subject="Offer", html="<p>Offer</p>"))
    assert first.tracked
    stored_as_sent_before_copies(instance, first)
    _member(instance, web, box)
    page = web.get(f"/conversations/{first.conversation_id}/reply")
    form = page.form(f"/conversations/{first.conversation_id}/reply")
    assert form["to"] == "c@example.org"
    assert "Offer" in form["html"] and "/t/" not in form["html"]


def test_a_plain_text_message_is_quoted_as_text(web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    asked = _receive(instance, box, None)
    _member(instance, web, box)
    page = web.get(f"/conversations/{asked.conversation_id}/reply?message={asked.id}")
    quote = page.form(f"/conversations/{asked.conversation_id}/reply")["html"]
    assert "It is broken.<br>\nPlease help." in quote


def test_replies_stay_inside_what_the_user_may_see(web: WebClient, instance: Instance) -> None:
    mine, theirs = _mailbox(instance), _mailbox(instance, "sales@example.com")
    hidden = _receive(instance, theirs, None)
    visible = instance.sender.send_draft(mine, Draft(
        from_addr=mine.address, to=["c@example.org"], subject="Hi", text="Hi"))
    _member(instance, web, mine)
    assert web.get(f"/conversations/{hidden.conversation_id}/reply").status == 404
    resp = web.client.post(f"/conversations/{hidden.conversation_id}/reply",
                           data={"csrf": "x", "to": "a@example.org", "text": "x"})
    assert resp.status_code == 404
    # A message of another conversation cannot be the one replied to.
    url = f"/conversations/{visible.conversation_id}/reply?message={hidden.id}"
    assert web.get(url).status == 404
    # Nor can the mailbox of the reply be swapped for another.
    page = web.get(f"/conversations/{visible.conversation_id}/reply")
    _post(web, page, f"/conversations/{visible.conversation_id}/reply", mailbox=str(theirs.id),
          to="a@example.org", html="<p>x</p>")
    assert {m.mailbox_id for m in instance.store.list_messages()
            if m.direction == "out"} == {mine.id}


# -- the plain-text alternative -----------------------------------------------------------

def test_html_to_text_reads_like_the_message() -> None:
    html = ("<html><head><title>T</title><style>p{}</style></head><body><h1>Hello</h1>"
            "<p>We   fixed\nit. See <a href='https://x.example/a'>the page</a> or "
            "<a href='https://y.example/'>https://y.example/</a>.</p>"
            "<ul><li>one</li><li>two<ol><li>a</li><li>b</li></ol></li></ul>"
            "<blockquote><p>Old</p><p>more<br>line</p></blockquote>"
            "<pre>code\n  indented</pre><img src='x' alt='Logo'>Bye &amp; thanks</body></html>")
    assert html_to_text(html) == (
        "Hello\n\nWe fixed it. See the page (https://x.example/a) or https://y.example/.\n\n"
        "- one\n- two\n  1. a\n  2. b\n\n> Old\n>\n> more\n> line\n\ncode\n  indented\n\n"
        "[Logo]Bye & thanks\n")
    assert html_to_text("<p><br></p>") == ""


# -- hostile headers in the message replied to (docs/security.md, "Outgoing headers") -------

HOSTILE_ID = "<a =?UTF-8?Q?=0ABcc:_spy@evil.example=0AX-Pad:?= b@example.org>"


def _receive_raw(instance: Instance, box: MailboxRecord, head: str) -> MessageRecord:
    raw = (f"From: Carla Customer <carla@example.org>\r\nTo: {box.address}\r\n{head}\r\n"
           "Content-Type: text/plain\r\n\r\nIt is broken.\r\n").encode()
    return Ingestor(instance.store, instance.sender).ingest(box, raw, "imap").message


def test_replying_unchanged_to_a_hostile_message_id_sends_to_the_sender_only(
        web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    asked = _receive_raw(instance, box, f"Subject: Broken printer\r\nMessage-ID: {HOSTILE_ID}"
                                        "\r\nReferences: <q0@example.org> <x =?UTF-8?Q?=0A?=>")
    _member(instance, web, box)
    action = f"/conversations/{asked.conversation_id}/reply"
    page = web.get(action)
    page = _post(web, page, action)  # sent as the form came
    assert page.status == 200, page.text("#form-error")
    reply = _sent(instance)
    assert reply.envelope_to == ["carla@example.org"] and reply.bcc == []
    raw = instance.store.get_raw(reply.id)
    assert b"evil" not in raw
    msg = _parsed(instance, reply.id)
    # The malformed id cannot be named; the well-formed reference still threads it.
    assert msg["In-Reply-To"] is None
    assert msg["References"] == "<q0@example.org>"


def test_replying_unchanged_to_a_subject_that_decodes_to_encoding_is_refused_by_name(
        web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance)
    # The subject's encoded word decodes to another one, which would decode to a Bcc line.
    asked = _receive_raw(instance, box, "Subject: =?UTF-8?B?PT9VVEYtOD9RP3g9MEFCY2M6X3NweUBl"
                                        "dmlsLmV4YW1wbGU/PQ==?=\r\nMessage-ID: <q1@example.org>")
    assert asked.subject == "=?UTF-8?Q?x=0ABcc:_spy@evil.example?="
    _member(instance, web, box)
    action = f"/conversations/{asked.conversation_id}/reply"
    page = web.get(action)
    page = _post(web, page, action)
    assert page.status == 422
    assert page.text("#form-error").startswith(
        "Subject: '=?UTF-8?Q?x=0ABcc:_spy@evil.example?=' is RFC 2047 encoding")
    assert page.soup.select_one("#subject")["aria-invalid"] == "true"
    assert [m.direction for m in instance.store.list_messages()] == ["in"]
