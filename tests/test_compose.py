"""Composing messages and preparing handed-over ones: no header injection, no Bcc header,
every other header byte kept."""

from __future__ import annotations

import email
import email.policy
import re
from email import base64mime, quoprimime
from email.message import Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailseen.core.compose import (
    Attachment,
    Draft,
    build_message,
    parse_address,
    prepare_raw,
    read_facts,
    reply_threading,
)
from mailseen.core.inject import tag_message
from mailseen.errors import InvalidInput, NotAMessage

DOMAIN = "example.com"
BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00"]


def draft(**kw: object) -> Draft:
    base: dict[str, object] = {"from_addr": "ann@example.com", "to": ["bob@example.org"],
                               "subject": "Hello", "text": "Hi Bob\n"}
    base.update(kw)
    return Draft(**base)  # type: ignore[arg-type]


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


def header_names(raw: bytes) -> list[str]:
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    return [line.split(b":", 1)[0].decode().lower() for line in re.split(rb"\r?\n", head)
            if line and line[:1] not in (b" ", b"\t")]


# --- build_message -------------------------------------------------------------------------

FIELDS = {
    "subject": lambda v: draft(subject=f"Hi{v}Bcc: evil@example.net"),
    "from_name": lambda v: draft(from_name=f"Ann{v}Bcc: evil@example.net"),
    "from": lambda v: draft(from_addr=f"ann@example.com{v}Bcc: evil@example.net"),
    "to": lambda v: draft(to=[f"bob@example.org{v}Bcc: evil@example.net"]),
    "cc": lambda v: draft(cc=[f"Carl <carl@example.org>{v}X-Evil: 1"]),
    "bcc": lambda v: draft(bcc=[f"dan@example.org{v}X-Evil: 1"]),
    "in_reply_to": lambda v: draft(in_reply_to=f"<a@b>{v}X-Evil: 1"),
    "references": lambda v: draft(references=f"<a@b>{v}X-Evil: 1"),
    "attachments": lambda v: draft(attachments=[Attachment(f"a{v}.txt", "text/plain", b"x")]),
}


@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
@pytest.mark.parametrize("field", list(FIELDS))
def test_line_breaks_in_any_field_are_refused_naming_the_field(field: str, brk: str) -> None:
    with pytest.raises(InvalidInput) as info:
        build_message(FIELDS[field](brk), DOMAIN)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("content_type", ["text/plain\r\nBcc: evil@example.net", "text",
                                          "a/b; x=y", "/plain", "multipart/mixed"])
def test_bad_attachment_content_types_are_refused(content_type: str) -> None:
    with pytest.raises(InvalidInput) as info:
        build_message(draft(attachments=[Attachment("a.bin", content_type, b"x")]), DOMAIN)
    assert info.value.field == "attachments"


def test_attached_message_goes_unencoded_as_rfc_2046_requires() -> None:
    eml = b"From: x@example.com\r\nSubject: old\r\n\r\nold body\r\n"
    raw = build_message(draft(attachments=[Attachment("old.eml", "message/rfc822", eml)]),
                        DOMAIN)
    attached = [p for p in parse(raw).walk() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    assert attached[0]["Content-Transfer-Encoding"] in (None, "7bit", "8bit")
    assert attached[0].get_payload(0)["Subject"] == "old"
    with pytest.raises(InvalidInput):
        build_message(draft(attachments=[Attachment("x.eml", "message/rfc822", b"\0" * 10)]),
                      DOMAIN)


def test_bcc_never_appears_as_a_header() -> None:
    raw = build_message(draft(bcc=["secret@example.net", "Other <other@example.net>"]),
                        DOMAIN)
    assert "bcc" not in header_names(raw)
    assert b"secret@example.net" not in raw and b"other@example.net" not in raw


def test_bcc_only_recipients_are_enough() -> None:
    raw = build_message(draft(to=[], bcc=["secret@example.net"]), DOMAIN)
    assert "bcc" not in header_names(raw) and "to" not in header_names(raw)


def test_message_has_the_expected_headers_and_bodies() -> None:
    raw = build_message(draft(
        from_name="Ann Example", to=['"Doe, John" <john@example.org>', "kim@example.org"],
        cc=["carl@example.org"], subject="Gr\u00fc\u00dfe \u2603", html="<p>Hi</p>",
        in_reply_to="<prev@example.com>", references="<first@example.com> <prev@example.com>",
        attachments=[Attachment("r\u00e9sum\u00e9.pdf", "application/pdf", b"%PDF-1.4")]),
        DOMAIN)
    msg = parse(raw)
    assert sorted(header_names(raw)) == sorted([
        "from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references",
        "content-type", "mime-version"])
    assert msg["Subject"] == "Gr\u00fc\u00dfe \u2603"
    assert [a.addr_spec for a in msg["To"].addresses] == ["john@example.org",
                                                          "kim@example.org"]
    assert msg["From"].addresses[0].display_name == "Ann Example"
    assert msg["Message-ID"].endswith("@example.com>")
    types = [p.get_content_type() for p in msg.walk()]
    assert types == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html",
                     "application/pdf"]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_built_html_message_is_trackable() -> None:
    raw = build_message(draft(html="<html><body><p>Hi</p></body></html>"), DOMAIN)
    result = tag_message(raw, '<img src="https://t.example/t/x.gif">', lambda url: False)
    assert result.trackable and result.parts_tagged == 1


@pytest.mark.parametrize(("kw", "field"), [
    ({"to": [], "cc": [], "bcc": []}, "to"),
    ({"text": None, "html": None}, "text"),
    ({"to": ["not an address"]}, "to"),
    ({"to": ["bob@localhost"]}, "to"),
    ({"to": ["a@example.org, b@example.org"]}, "to"),
    ({"cc": [""]}, "cc"),
    ({"from_addr": "nobody"}, "from"),
])
def test_invalid_fields_are_refused_naming_them(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        build_message(draft(**kw), DOMAIN)
    assert info.value.field == field


def test_parse_address_returns_the_bare_address() -> None:
    assert parse_address('"Doe, John" <john@example.org>', "to") == "john@example.org"
    with pytest.raises(InvalidInput):
        parse_address("john@example.org\r\nBcc: x@example.org", "to")


@settings(max_examples=200, deadline=None)
@given(subject=st.text(max_size=120), name=st.text(max_size=60))
def test_arbitrary_subjects_and_names_never_add_a_header(subject: str, name: str) -> None:
    try:
        raw = build_message(draft(subject=subject, from_name=name), DOMAIN)
    except InvalidInput as exc:
        assert exc.field in ("subject", "from_name", "from", None)
        return
    assert sorted(header_names(raw)) == sorted([
        "from", "to", "subject", "date", "message-id", "content-type",
        "content-transfer-encoding", "mime-version"])
    msg = parse(raw)
    assert " ".join(str(msg["Subject"]).split()) == " ".join(subject.split())


# Encoded words that the email package decodes into a line break and a Bcc field.
BCC_WORD = "=?UTF-8?Q?x=0ABcc=3A_evil=40evil.example=0A?="
ENCODED = {
    "subject": lambda w: draft(subject=f"Re: {w}"),
    "from_name": lambda w: draft(from_name=w),
    "to": lambda w: draft(to=[f"{w} <bob@example.org>"]),
    "cc": lambda w: draft(cc=[f'"{w}" <carl@example.org>']),
    "bcc": lambda w: draft(bcc=[f"{w} <dan@example.org>"]),
    "in_reply_to": lambda w: draft(in_reply_to=f"<a {w} b@example.org>"),
    "references": lambda w: draft(references=f"<first@example.org> <a{w}@example.org>"),
    "attachments": lambda w: draft(attachments=[Attachment(f"{w}.txt", "text/plain", b"x")]),
}


@pytest.mark.parametrize("word", [BCC_WORD, "=?UTF-8?Q?=0ABcc:_evil@evil.example=0AX-Pad:?=",
                                  "=?utf-8?b?CkJjYzogZXZpbEBldmlsLmV4YW1wbGUK?="])
@pytest.mark.parametrize("field", list(ENCODED))
def test_encoded_words_in_any_field_are_refused_naming_the_field(field: str, word: str) -> None:
    with pytest.raises(InvalidInput) as info:
        build_message(ENCODED[field](word), DOMAIN)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ") and "RFC 2047" in str(info.value)


@pytest.mark.parametrize(("field", "value"), [
    ("in_reply_to", "not-an-id"), ("in_reply_to", "<a b@example.org>"),
    ("references", "<ok@example.org> <a b@example.org>"), ("references", "<x@y> <>"),
])
def test_thread_headers_hold_message_ids_only(field: str, value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        build_message(draft(**{field: value}), DOMAIN)
    assert info.value.field == field and "not a message id" in str(info.value)


@settings(max_examples=200, deadline=None)
@given(before=st.text(max_size=20), after=st.text(max_size=20), b64=st.booleans(),
       payload=st.one_of(st.text(max_size=40), st.just("\nBcc: evil@evil.example\n")))
def test_subjects_with_any_encoded_word_never_add_a_header(before: str, payload: str,
                                                           after: str, b64: bool) -> None:
    encode = base64mime.header_encode if b64 else quoprimime.header_encode
    word = encode(payload.encode("utf-8", "surrogatepass"), "utf-8")
    try:
        raw = build_message(draft(subject=before + word + after), DOMAIN)
    except InvalidInput as exc:
        assert exc.field == "subject"
        return
    assert sorted(header_names(raw)) == sorted([
        "from", "to", "subject", "date", "message-id", "content-type",
        "content-transfer-encoding", "mime-version"])


def test_a_reply_names_only_well_formed_message_ids() -> None:
    hostile = "<a =?UTF-8?Q?=0ABcc:_spy@evil.example=0AX-Pad:?= b@example.org>"
    assert reply_threading(hostile, "<q0@example.org> junk <x=?u?q?=0A?=@y>") == (
        None, "<q0@example.org>")
    assert reply_threading("<q1@example.org>", None) == ("<q1@example.org>",
                                                         "<q1@example.org>")
    refs = " ".join(f"<r{n}@example.org>" for n in range(30))
    parent, chain = reply_threading("<r29@example.org>", refs)
    assert parent == "<r29@example.org>"
    assert chain == " ".join(f"<r{n}@example.org>" for n in range(10, 30))


# --- prepare_raw ---------------------------------------------------------------------------

RAW = (b"Received: from x by y; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
       b"From:   Ann  <ann@example.com>\r\n"
       b"To: bob@example.org,\r\n\t Carl <carl@example.org>\r\n"
       b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and\r\n  more\r\n"
       b"X-Odd-Spacing :  kept   as is \r\n"
       b"Message-ID: <m1@example.com>\r\n"
       b"Content-Type: text/html; charset=utf-8\r\n"
       b"\r\n<p>Hi</p>\r\n")


def test_message_with_id_and_no_bcc_is_returned_byte_identical() -> None:
    out, facts = prepare_raw(RAW, DOMAIN)
    assert out == RAW
    assert facts.message_id == "<m1@example.com>"
    assert facts.subject == "Gr\u00fc\u00dfe and more"
    assert facts.from_addr == "ann@example.com"
    assert facts.to == ["bob@example.org", "carl@example.org"]
    assert facts.bcc == [] and facts.cc == []


@pytest.mark.parametrize("bcc", [
    b"Bcc: secret@example.net\r\n",
    b"BCC: secret@example.net,\r\n  other@example.net\r\n",
    b"bcc : secret@example.net\r\n",
    b"Bcc: secret@example.net\r\nBcc: other@example.net\r\n",
    b"Bcc:\r\n",
])
@pytest.mark.parametrize("where", ["top", "middle", "last"])
def test_bcc_header_is_removed_and_nothing_else_changes(bcc: bytes, where: str) -> None:
    head, body = RAW.split(b"\r\n\r\n", 1)
    lines = [line + b"\r\n" for line in head.split(b"\r\n")]
    lines = [line for line in lines if line[:1] not in (b" ", b"\t")]  # no folds to split
    at = {"top": 0, "middle": 3, "last": len(lines)}[where]
    raw = b"".join(lines[:at]) + bcc + b"".join(lines[at:]) + b"\r\n" + body
    out, facts = prepare_raw(raw, DOMAIN)
    assert out == b"".join(lines) + b"\r\n" + body
    assert "bcc" not in header_names(out)
    expected = [a for a in ("secret@example.net", "other@example.net") if a.encode() in bcc]
    assert facts.bcc == expected


def test_missing_message_id_is_added_and_every_other_byte_kept() -> None:
    raw = RAW.replace(b"Message-ID: <m1@example.com>\r\n", b"")
    out, facts = prepare_raw(raw, DOMAIN)
    assert out == b"Message-ID: " + facts.message_id.encode() + b"\r\n" + raw
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", facts.message_id)


def test_empty_message_id_is_replaced_not_duplicated() -> None:
    raw = RAW.replace(b"Message-ID: <m1@example.com>", b"Message-ID:  ")
    out, facts = prepare_raw(raw, DOMAIN)
    assert header_names(out).count("message-id") == 1
    assert out == (b"Message-ID: " + facts.message_id.encode() + b"\r\n" +
                   RAW.replace(b"Message-ID: <m1@example.com>\r\n", b""))


def test_lf_message_stays_lf() -> None:
    raw = b"From: a@example.com\nTo: b@example.org\nBcc: c@example.org\n\nbody\n"
    out, facts = prepare_raw(raw, DOMAIN)
    assert out == b"Message-ID: " + facts.message_id.encode() + \
        b"\nFrom: a@example.com\nTo: b@example.org\n\nbody\n"


def test_header_with_only_bcc_leaves_a_well_formed_message() -> None:
    out, facts = prepare_raw(b"Bcc: c@example.org\r\n\r\nbody\r\n", DOMAIN)
    assert out == b"Message-ID: " + facts.message_id.encode() + b"\r\n\r\nbody\r\n"


def test_raw_utf8_headers_are_read_as_utf8() -> None:
    raw = "Subject: h\u00e9llo w\u00f6rld\r\nTo: J\u00f6rg <j@example.org>\r\n\r\nx".encode()
    out, facts = prepare_raw(raw, DOMAIN)
    assert facts.subject == "h\u00e9llo w\u00f6rld"
    assert facts.to == ["j@example.org"]
    assert out.endswith(raw)


@pytest.mark.parametrize("raw", [
    b"", b"   \r\n\t\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\x00\x01\x02\x03",
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", b"<html><body>hi</body></html>", b'{"to": "x"}',
    b"\r\nbody without any headers", b"Subject: ok\r\nthis is not a header\r\n\r\nbody",
    b"From nobody Mon Jan  1 00:00:00 2024\nSubject: mbox\n\nx", b"Subject\x00: x\r\n\r\n",
    bytes(range(256)),
], ids=["empty", "blank", "png", "nul", "pdf", "html", "json", "no-headers", "bad-line",
        "mbox-from-line", "nul-in-name", "all-bytes"])
def test_what_is_not_a_message_is_refused(raw: bytes) -> None:
    with pytest.raises(NotAMessage):
        prepare_raw(raw, DOMAIN)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_message_or_refused_never_a_crash(raw: bytes) -> None:
    try:
        out, facts = prepare_raw(raw, DOMAIN)
    except NotAMessage:
        return
    names = header_names(out)
    assert facts.message_id and names.count("message-id") >= 1 and "bcc" not in names
    if "bcc" not in header_names(raw) and "message-id" in header_names(raw) and \
            read_facts(raw).message_id:
        assert out == raw


@settings(max_examples=200, deadline=None)
@given(subject=st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=80),
       crlf=st.booleans(), with_id=st.booleans())
def test_prepared_headers_keep_their_bytes(subject: str, crlf: bool, with_id: bool) -> None:
    eol = b"\r\n" if crlf else b"\n"
    lines = [b"From: a@example.com", b"To: b@example.org", b"Subject: " + subject.encode()]
    if with_id:
        lines.append(b"Message-ID: <x@example.com>")
    raw = eol.join([*lines, b"", b"body", b""])
    out, facts = prepare_raw(raw, DOMAIN)
    if with_id:
        assert out == raw
    else:
        assert out == b"Message-ID: " + facts.message_id.encode() + eol + raw
    assert facts.subject == " ".join(subject.split())


def test_read_facts_leaves_the_message_id_empty_when_there_is_none() -> None:
    facts = read_facts(b"From: a@example.com\r\nBcc: b@example.org\r\n\r\nx")
    assert facts.message_id == "" and facts.bcc == ["b@example.org"]
    with pytest.raises(NotAMessage):
        read_facts(b"")


def test_obsolete_space_before_colon_does_not_hide_later_fields() -> None:
    raw = b"X-Old :  x\r\nMessage-ID: <m@example.com>\r\nBcc: b@example.org\r\n\r\nx"
    out, facts = prepare_raw(raw, DOMAIN)
    assert facts.message_id == "<m@example.com>"
    assert out == b"X-Old :  x\r\nMessage-ID: <m@example.com>\r\n\r\nx"


@pytest.mark.parametrize("subject", [b"=?\xffutf-8?q?Gr=C3=BC?=", b"=?x-nonsense?q?abc?=",
                                     b"=?utf-8?b?not base64!?=", b"=?utf-8?q?=FF=FE?="])
def test_bad_encoded_words_leave_the_subject_readable(subject: bytes) -> None:
    raw = b"From: a@example.com\r\nSubject: " + subject + b"\r\n\r\nx"
    out, facts = prepare_raw(raw, DOMAIN)
    assert out.endswith(raw)
    assert isinstance(facts.subject, str) and facts.subject
