"""Reading a stored message within bounds: MIME nested past MAX_NESTING or with more than
MAX_PARTS parts is refused with a note after bounded work, never a RecursionError, and what
is within the bounds reads as the standard library reads it."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailseen.core.mailbody import (
    MAX_NESTING,
    MAX_PARTS,
    TooComplex,
    parse_message,
    read_body,
    walk,
)

HEAD = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: shape\r\n"
        b"Message-ID: <shape@example.org>\r\nMIME-Version: 1.0\r\n")


def nested_mail(levels: int) -> bytes:
    """A text part inside ``levels`` multiparts, each inside the last."""
    out = [HEAD]
    for i in range(levels):
        out.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\nhello from the bottom\r\n")
    out.extend(b"--b%d--\r\n" % i for i in reversed(range(levels)))
    return b"".join(out)


def many_parts_mail(parts: int) -> bytes:
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i
                    for i in range(parts))
    return (HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body
            + b"--b--\r\n")


def test_a_1000_level_nested_mail_is_refused_not_a_recursion_error() -> None:
    raw = nested_mail(1000)
    with pytest.raises(RecursionError):  # what the standard library does with it
        list(email.message_from_bytes(raw, policy=email.policy.default).walk())
    with pytest.raises(TooComplex, match=f"nested more than {MAX_NESTING}"):
        parse_message(raw)
    body = read_body(raw)
    assert body.html is None and body.text is None
    assert "too complex to display safely" in body.note


def test_a_50000_part_mail_is_refused_after_reading_max_parts() -> None:
    raw = many_parts_mail(50_000)
    with pytest.raises(TooComplex, match=f"more than {MAX_PARTS} MIME parts"):
        parse_message(raw)
    assert "too complex" in read_body(raw).note


def test_a_content_type_in_encoded_words_does_not_get_past_the_bound() -> None:
    # The default policy decodes =?…?= even here, so the parser nests on it.
    raw = nested_mail(200).replace(b"Content-Type: multipart/mixed;",
                                   b"Content-Type: =?utf-8?q?multipart/mixed?=;")
    with pytest.raises(TooComplex):
        parse_message(raw)


def test_mail_within_the_bounds_reads_as_the_standard_library_reads_it() -> None:
    for raw in (nested_mail(MAX_NESTING - 2), many_parts_mail(MAX_PARTS - 1)):
        ours = [p.get_content_type() for p in walk(parse_message(raw))]
        theirs = [p.get_content_type()
                  for p in email.message_from_bytes(raw, policy=email.policy.default).walk()]
        assert ours == theirs
    assert read_body(nested_mail(MAX_NESTING - 2)).text == "hello from the bottom"
