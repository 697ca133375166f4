"""The one ingest path: stored once, threaded, our pixels removed, human replies mark the
message they answer as seen, automatic replies never do."""

from __future__ import annotations

import pytest

from mailseen.core.tokens import TokenRef
from mailseen.errors import NotAMessage
from mailseen.records import MailboxIn, MailboxRecord, MessageRecord
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance


@pytest.fixture
def box(instance: Instance) -> MailboxRecord:
    return instance.store.add_mailbox(MailboxIn("support@example.com", tracking="enabled"))


@pytest.fixture
def ingestor(instance: Instance) -> Ingestor:
    return Ingestor(instance.store, instance.sender)


def _sent(instance: Instance, box: MailboxRecord, subject: str = "Your ticket"
          ) -> MessageRecord:
    raw = (f"From: support@example.com\r\nTo: Carol <carol@example.org>\r\n"
           f"Subject: {subject}\r\nContent-Type: text/html\r\n\r\n"
           "<html><body><p>We fixed it.</p></body></html>\r\n").encode()
    return instance.sender.submit(box, raw)


def _reply(to: MessageRecord | None, *, msgid: str = "<r1@example.org>", extra: str = "",
           body: str = "Thanks!", html: str | None = None) -> bytes:
    head = (f"From: Carol <carol@example.org>\r\nTo: support@example.com\r\n"
            f"Subject: Re: Your ticket\r\nMessage-ID: {msgid}\r\n{extra}")
    if to is not None:
        head += f"In-Reply-To: {to.message_id}\r\nReferences: {to.message_id}\r\n"
    if html is not None:
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html).encode()
    return (head + "\r\n" + body + "\r\n").encode()


def test_a_reply_is_threaded_and_proves_the_message_was_seen(
        instance: Instance, box: MailboxRecord, ingestor: Ingestor) -> None:
    sent = _sent(instance, box)
    assert not sent.viewed
    result = ingestor.ingest(box, _reply(sent), "smtp")
    assert not result.duplicate and result.replied_to == [sent.id]
    assert result.message.direction == "in"
    assert result.message.conversation_id == sent.conversation_id
    after = instance.store.get_message(sent.id)
    assert after.viewed and after.replied_at is not None and after.view_count == 0
    conv = instance.store.get_conversation(sent.conversation_id or 0)
    assert conv.other_party == "carol@example.org" and conv.latest_sent_id == sent.id


def test_the_same_message_twice_is_stored_once(instance: Instance, box: MailboxRecord,
                                               ingestor: Ingestor) -> None:
    sent = _sent(instance, box)
    first = ingestor.ingest(box, _reply(sent), "imap")
    again = ingestor.ingest(box, _reply(sent), "smtp")
    assert again.duplicate and again.message.id == first.message.id
    assert len(instance.store.conversation_messages(sent.conversation_id or 0)) == 2


def test_a_message_without_message_id_is_still_deduplicated(
        instance: Instance, box: MailboxRecord, ingestor: Ingestor) -> None:
    raw = b"From: a@example.org\r\nTo: support@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
    first = ingestor.ingest(box, raw, "imap")
    assert first.message.message_id.endswith("@mailseen.invalid>")
    assert ingestor.ingest(box, raw, "imap").duplicate


def test_an_out_of_office_reply_is_threaded_but_never_marks_viewed(
        instance: Instance, box: MailboxRecord, ingestor: Ingestor) -> None:
    sent = _sent(instance, box)
    result = ingestor.ingest(box, _reply(sent, extra="Auto-Submitted: auto-replied\r\n",
                                         body="I am out of office until Monday."), "imap")
    assert result.message.automatic and result.replied_to == []
    assert result.message.auto_reason
    assert result.message.conversation_id == sent.conversation_id
    assert not instance.store.get_message(sent.id).viewed


def test_our_quoted_pixel_is_removed_and_threads_a_reply_without_headers(
        instance: Instance, box: MailboxRecord, ingestor: Ingestor) -> None:
    sent = _sent(instance, box)
    token = instance.signer.make(TokenRef(sent.id))
    quoted = (f'<html><body><p>Thanks!</p><blockquote><p>We fixed it.</p>'
              f'<img src="http://old.example/t/{token}.gif" width="1" height="1"></blockquote>'
              f'</body></html>')
    # The client dropped In-Reply-To and References: our token still threads it.
    result = ingestor.ingest(box, _reply(None, html=quoted), "imap")
    assert result.message.conversation_id == sent.conversation_id
    stored = instance.store.get_raw(result.message.id)
    assert token.encode() not in stored and b"We fixed it." in stored
    assert result.replied_to == [sent.id]


@pytest.mark.parametrize("src", [
    "{base}/t/./{token}.gif",
    "{base}\\t\\{token}.gif",
    "{base}/t/{head}&#9;{tail}.gif",
    "{base}/%74/{token}.gif",
    "{base}/t/x/../{token}.gif",
    "{base}/t/not-this-nodes-token.gif",  # under our /t/ whatever the token
    "http://old-name.example/t/./{token}.gif",
])
def test_disguised_quoted_pixels_are_removed_at_ingest(
        instance: Instance, box: MailboxRecord, ingestor: Ingestor, src: str) -> None:
    sent = _sent(instance, box)
    token = instance.signer.make(TokenRef(sent.id))
    url = src.format(base=instance.sender.base_url, token=token, head=token[:4],
                     tail=token[4:])
    quoted = (f'<html><body><p>Thanks!</p><blockquote><p>We fixed it.</p>'
              f'<img src="{url}" width="1" height="1"></blockquote></body></html>')
    result = ingestor.ingest(box, _reply(None, html=quoted), "imap")
    stored = instance.store.get_raw(result.message.id)
    assert b"<img" not in stored and b"We fixed it." in stored
    if "not-this" not in src:  # a genuine token still threads the reply
        assert result.message.conversation_id == sent.conversation_id


@pytest.mark.parametrize("css", [
    "<style class=\"q\">p {{ background-image: url({base}/t/{token}.gif) }}</style>",
    "<style>p {{ background: \\75 rl('{base}/t/./{token}.gif') }}</style>",
    # CSS escapes a backslash as \5c; the URL's backslashes are then slashes to a browser.
    "<p style=\"background:&#117;rl({base}\\5c t\\5c {token}.gif)\">quoted</p>",
])
def test_quoted_pixels_in_css_are_neutralised_at_ingest(
        instance: Instance, box: MailboxRecord, ingestor: Ingestor, css: str) -> None:
    sent = _sent(instance, box)
    token = instance.signer.make(TokenRef(sent.id))
    html = (f"<html><head></head><body><p>Thanks!</p><blockquote>"
            f"{css.format(base=instance.sender.base_url, token=token)}</blockquote>"
            f"</body></html>")
    result = ingestor.ingest(box, _reply(None, html=html), "imap")
    stored = instance.store.get_raw(result.message.id)
    assert token.encode() not in stored and b"Thanks!" in stored


def test_an_unrelated_message_starts_a_new_conversation(
        instance: Instance, box: MailboxRecord, ingestor: Ingestor) -> None:
    sent = _sent(instance, box)
    result = ingestor.ingest(box, _reply(None, msgid="<new@example.org>"), "smtp")
    assert result.message.conversation_id not in (None, sent.conversation_id)
    assert result.replied_to == []


def test_a_reply_to_a_reply_stays_in_the_conversation(
        instance: Instance, box: MailboxRecord, ingestor: Ingestor) -> None:
    sent = _sent(instance, box)
    first = ingestor.ingest(box, _reply(sent), "imap").message
    answer = instance.sender.submit(box, (
        f"From: support@example.com\r\nTo: carol@example.org\r\nSubject: Re: Your ticket\r\n"
        f"In-Reply-To: {first.message_id}\r\nReferences: {sent.message_id} "
        f"{first.message_id}\r\n\r\nGlad to help.\r\n").encode())
    assert answer.conversation_id == sent.conversation_id
    conv = instance.store.get_conversation(sent.conversation_id or 0)
    assert conv.latest_sent_id == answer.id


def test_garbage_is_refused(box: MailboxRecord, ingestor: Ingestor) -> None:
    with pytest.raises(NotAMessage):
        ingestor.ingest(box, b"\x00\x01 not mail", "smtp")


@pytest.mark.parametrize(("from_field", "sender"), [
    ("ceo@bank.example <attacker@evil.example>", "attacker@evil.example"),
    ("ada@example.com <x@evil.example>", "x@evil.example"),  # a teammate's address as a name
    ('"ada@example.com" <x@evil.example>', "x@evil.example"),
    ("Carol <carol@example.org>", "carol@example.org"),
    ("carol@example.org", "carol@example.org"),
])
def test_the_sender_is_the_address_in_angle_brackets_not_a_look_alike_name(
        box: MailboxRecord, ingestor: Ingestor, from_field: str, sender: str) -> None:
    raw = (f"From: {from_field}\r\nTo: support@example.com\r\nSubject: Invoice\r\n"
           f"Message-ID: <spoof@evil.example>\r\n\r\nPay now.\r\n").encode()
    stored = ingestor.ingest(box, raw, "test").message
    assert stored.from_addr == sender


def test_bidi_overrides_in_a_subject_or_name_are_neutralised_at_ingest(
        box: MailboxRecord, ingestor: Ingestor) -> None:
    subject = "invoice\u202etxt.exe \u2067x\u2069 \u200fshalom"  # RLO, RLI/PDI, and an RLM
    raw = (f"From: Mallory <m\u202e@evil.example>\r\nTo: support@example.com\r\n"
           f"Subject: {subject}\r\nMessage-ID: <bidi@evil.example>\r\n\r\nx\r\n").encode()
    stored = ingestor.ingest(box, raw, "test").message
    assert stored.subject == "invoicetxt.exe x \u200fshalom"  # the plain mark stays
    assert "\u202e" not in stored.from_addr
