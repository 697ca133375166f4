"""Property-based tests of inbound mail: auto-reply detection on generated header blocks and
arbitrary bytes, and the ingest path on generated messages (never a crash, stored once, nothing
that could break a header or a page stored)."""

from __future__ import annotations

import uuid
from email.header import Header

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailseen.core.autoreply import detect_automatic
from mailseen.errors import NotAMessage
from mailseen.records import MailboxIn
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance

# Header text of a person's message: no colon (no "Automatic reply:" subject prefix can form)
# and no line breaks.
WORDS = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
                              blacklist_characters=":"), max_size=40)
ADDRESS = st.from_regex(r"[a-z][a-z0-9.]{0,10}@[a-z]{1,10}\.(org|com|de)", fullmatch=True)

# (header line, what the reason must mention): each one alone makes a message automatic.
MARKERS = [
    ("Auto-Submitted: auto-replied", "Auto-Submitted"),
    ("Auto-Submitted: auto-generated; owner-email=x@example.org", "Auto-Submitted"),
    ("X-Autoreply: yes", "X-Autoreply"),
    ("X-Autorespond: Vacation", "X-Autorespond"),
    ("Precedence: auto_reply", "Precedence"),
    ("Return-Path: <>", "bounce"),
    ("Content-Type: multipart/report; report-type=delivery-status; boundary=b", "bounce"),
]


def _case(text: str, flips: list[bool]) -> str:
    """``text`` with the letters of its header name upper- or lower-cased as ``flips`` says."""
    name, sep, value = text.partition(":")
    flipped = "".join(c.upper() if f else c.lower() for c, f in zip(name, flips + [False] * 99,
                                                                  strict=False))
    return flipped + sep + value


@st.composite
def person_headers(draw: st.DrawFn) -> list[str]:
    subject = draw(WORDS)
    lines = [f"From: {draw(ADDRESS)}", f"To: {draw(ADDRESS)}",
             f"Subject: {Header(subject, 'utf-8').encode()}",
             f"Message-ID: <{uuid.uuid4().hex}@example.org>"]
    if draw(st.booleans()):
        lines.append("Auto-Submitted: no")  # RFC 3834: a person's message, said outright
    if draw(st.booleans()):
        lines.append("X-Mailer: " + draw(st.sampled_from(["Outlook 16.0", "Thunderbird", "K-9"])))
    return draw(st.permutations(lines))


def _message(lines: list[str], body: bytes = b"Hello\r\n") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


@given(st.binary(max_size=2000))
def test_any_bytes_get_an_answer_never_an_exception(raw: bytes) -> None:
    result = detect_automatic(raw)
    assert isinstance(result.automatic, bool) and result.reason


@given(person_headers())
def test_a_persons_message_is_not_automatic(lines: list[str]) -> None:
    assert detect_automatic(_message(lines)).automatic is False


@given(person_headers(), st.sampled_from(MARKERS), st.lists(st.booleans(), max_size=30),
       st.integers(0, 6), st.booleans())
def test_any_one_marker_anywhere_in_any_case_makes_it_automatic(
        lines: list[str], marker: tuple[str, str], flips: list[bool], position: int,
        folded: bool) -> None:
    line, reason = marker
    if line.startswith("Auto-Submitted"):  # one Auto-Submitted per message (RFC 3834)
        lines = [ln for ln in lines if not ln.startswith("Auto-Submitted")]
    line = _case(line, flips)
    if folded and ";" in line:  # RFC 5322 folding: the value goes on over a second line
        line = line.replace("; ", ";\r\n\t", 1)
    lines.insert(min(position, len(lines)), line)
    result = detect_automatic(_message(lines))
    assert result.automatic is True and reason.lower() in result.reason.lower(), result


BODIES = st.one_of(
    st.binary(max_size=500),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    st.just(b"<html><body><p>Thanks</p><img src=\"https://elsewhere.example/x.png\">"
            b"</body></html>\r\n"),
)
HOSTILE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@pytest.fixture
def ingestor(instance: Instance) -> Ingestor:
    return Ingestor(instance.store, instance.sender)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=person_headers(), body=BODIES, hostile=HOSTILE,
       marker=st.none() | st.sampled_from(MARKERS), crlf=st.booleans())
def test_generated_messages_are_stored_once_and_clean(
        instance: Instance, ingestor: Ingestor, lines: list[str], body: bytes, hostile: str,
        marker: tuple[str, str] | None, crlf: bool) -> None:
    box = instance.store.find_mailbox("support@example.com") if instance.store.list_mailboxes(
    ) else instance.store.add_mailbox(MailboxIn("support@example.com"))
    # A raw, unencoded hostile subject (8-bit, control characters, stray CR) beside the rest.
    lines = [ln for ln in lines if not ln.startswith("Subject:")]
    lines.append("Subject: " + hostile.replace("\n", " ").replace("\r", " "))
    if marker is not None:
        if marker[0].startswith("Auto-Submitted"):  # one per message (RFC 3834)
            lines = [ln for ln in lines if not ln.startswith("Auto-Submitted")]
        lines.append(marker[0])
    raw = _message(lines, body)
    if not crlf:
        raw = raw.replace(b"\r\n", b"\n")
    try:
        first = ingestor.ingest(box, raw, "smtp")
    except NotAMessage:
        return  # refused with a clear error: allowed, never anything else
    again = ingestor.ingest(box, raw, "imap")
    assert again.duplicate and again.message.id == first.message.id
    stored = instance.store.get_message(first.message.id)
    for text in (stored.subject, stored.from_addr, stored.message_id):
        assert not any(ord(c) < 32 or ord(c) == 127 for c in text), repr(text)
    assert stored.automatic == (marker is not None), raw
