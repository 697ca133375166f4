"""The byte-offset MIME tree agrees with the email package about every part's bytes."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailseen.core import mimetree
from mailseen.core.mimetree import BrokenMime, Part, eol_of, parse_tree, split_head


def _leaves_agree(raw: bytes) -> None:
    """Every part parse_tree finds is the part the email package finds, with the same body."""
    ours = parse_tree(raw)
    theirs = email.message_from_bytes(raw, policy=email.policy.compat32)
    _agree(raw, ours, theirs)


def _agree(raw: bytes, ours: Part, theirs: Message) -> None:
    assert ours.content_type == theirs.get_content_type()
    assert ours.start <= ours.body_start <= ours.end <= len(raw)
    if ours.is_multipart:
        kids = theirs.get_payload()
        assert isinstance(kids, list)
        assert len(ours.children) == len(kids)
        for mine, other in zip(ours.children, kids, strict=True):
            _agree(raw, mine, other)
    elif ours.content_type != "message/rfc822":
        payload = theirs._payload  # get_payload() would decode 8-bit text with its charset
        assert isinstance(payload, str)
        assert raw[ours.body_start : ours.end] == payload.encode("ascii", "surrogateescape")


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


NESTED = """\
From: a@example.com
Content-Type: multipart/mixed; boundary="b"

This is a preamble.
--b
Content-Type: multipart/alternative; boundary="b-1"

--b-1
Content-Type: text/plain

plain --b-1x is not a delimiter
--b-1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 8bit

<p>html \u00e9</p>
--b-1--
--b  \t
Content-Type: application/octet-stream
Content-Disposition: attachment; filename=x.bin

AAAA
--b--
epilogue
"""


@pytest.mark.parametrize("raw", [NESTED.encode(), _crlf(NESTED)], ids=["lf", "crlf"])
def test_nested_parts_have_the_email_packages_bytes(raw: bytes) -> None:
    _leaves_agree(raw)
    root = parse_tree(raw)
    alt, att = root.children
    assert [p.content_type for p in root.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html",
        "application/octet-stream"]
    html = alt.children[1]
    assert raw[html.body_start : html.end].decode() == "<p>html \u00e9</p>"
    assert html.transfer_encoding == "8bit"
    assert att.is_attachment and not html.is_attachment
    # Header bytes run from the part's start to the blank line.
    assert raw[html.start : html.body_start].startswith(b"Content-Type: text/html")


def test_delimiter_right_after_the_headers_and_no_final_newline() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nno headers\r\n"
           b"--x\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--x--")
    _leaves_agree(raw)
    root = parse_tree(raw)
    first, second = root.children
    assert first.content_type == "text/plain"  # the default when a part has no headers
    assert raw[first.body_start : first.end] == b"no headers"
    assert raw[second.body_start : second.end] == b"<b>x</b>"


def test_digest_parts_default_to_attached_messages() -> None:
    raw = (b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nFrom: x@example.com\n"
           b"Subject: one\n\nbody\n--d--\n")
    assert parse_tree(raw).children[0].content_type == "message/rfc822"


def test_single_part_body_is_everything_after_the_blank_line() -> None:
    raw = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<p>a</p>\r\n"
    root = parse_tree(raw)
    assert (root.body_start, root.end) == (raw.index(b"<p>"), len(raw))
    assert root.children == []


def test_non_ascii_boundary_is_broken_as_the_email_package_finds_no_parts_either() -> None:
    raw = ("Content-Type: multipart/mixed; boundary=\"\u00e9t\u00e9\"\n\n--\u00e9t\u00e9\n"
           "Content-Type: text/html\n\n<p>x</p>\n--\u00e9t\u00e9--\n").encode()
    assert not email.message_from_bytes(raw, policy=email.policy.default).is_multipart()
    with pytest.raises(BrokenMime, match="non-ASCII"):
        parse_tree(raw)


@pytest.mark.parametrize(("raw", "why"), [
    (b"Content-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n", "without a boundary"),
    (b"Content-Type: multipart/mixed; boundary=x\n\n--y\n\nbody\n--y--\n", "never appears"),
    (b"Content-Type: multipart/mixed; boundary=x\n\n--x--\n", "no parts"),
    (b"Content-Type: multipart/mixed; boundary=" + b"x" * 201 + b"\n\n--x\n", "longer"),
    (b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n\n<p>\n",
     "without its closing boundary"),
    (b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\na\n--x\n"
     b"Content-Type: multipart/mixed; boundary=y\n\n--y\n\nb\n--x--\n",
     "without its closing boundary"),
    (b"Content-Type: multipart/mixed; boundary=x\n\nContent-Type: text/html\n\n<p>a</p>\n"
     b"--x\nContent-Type: text/plain\n\nb\n--x--\n", "no opening boundary"),
], ids=["no-boundary", "boundary-never-appears", "no-parts", "long-boundary",
        "no-closing-boundary", "nested-no-closing-boundary", "no-opening-boundary"])
def test_broken_structure_is_reported(raw: bytes, why: str) -> None:
    with pytest.raises(BrokenMime, match=why):
        parse_tree(raw)


def test_nesting_is_bounded() -> None:
    raw = b""
    for depth in range(60):
        raw += f"--b{depth}\nContent-Type: multipart/mixed; boundary=b{depth + 1}\n\n".encode()
    closers = "".join(f"--b{depth}--\n" for depth in reversed(range(61))).encode()
    raw = b"Content-Type: multipart/mixed; boundary=b0\n\n" + raw + b"--b60\n\nx\n" + closers
    with pytest.raises(BrokenMime, match="deeply"):
        parse_tree(raw)


def test_eol_is_judged_by_the_first_line() -> None:
    assert eol_of(b"Subject: x\r\n\r\nbody\n") == b"\r\n"
    assert eol_of(b"Subject: x\n\nbody\r\n") == b"\n"
    assert eol_of(b"no newline") == b"\n"


def test_split_head_finds_the_blank_line() -> None:
    raw = b"A: 1\r\nB: 2\r\n\r\nbody"
    assert split_head(raw) == (raw.index(b"\r\n\r\n"), raw.index(b"body"))
    assert split_head(b"\nbody") == (0, 1)
    assert split_head(b"A: 1\nB: 2") == (9, 9)


# Random MIME trees built with the email package.
LEAF_TYPES = ["plain", "html", "x-amp-html", "calendar"]


@st.composite
def mime_tree(draw: st.DrawFn, depth: int = 0) -> EmailMessage:
    if depth < 3 and draw(st.booleans()):
        msg = EmailMessage()
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report"]))
        msg["Content-Type"] = f"multipart/{subtype}"
        for _ in range(draw(st.integers(1, 3))):
            msg.attach(draw(mime_tree(depth + 1)))
        if draw(st.booleans()):
            msg.preamble = draw(st.sampled_from(["", "preamble", "--not a delimiter"]))
        if draw(st.booleans()):
            msg.epilogue = draw(st.sampled_from(["", "epilogue\n", "--trailing"]))
        return msg
    leaf = EmailMessage()
    kind = draw(st.sampled_from([*LEAF_TYPES, "image", "message"]))
    if kind == "image":
        leaf.set_content(draw(st.binary(max_size=200)), maintype="image", subtype="png",
                         filename="a.png")
    elif kind == "message":
        inner = EmailMessage()
        inner["Subject"] = "inner"
        inner.set_content("<p>inner</p>", subtype="html")
        leaf.set_content(inner)
    else:
        text = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                            max_size=300))
        cte = draw(st.sampled_from(["quoted-printable", "base64", "8bit"]))
        leaf.set_content(text, subtype=kind, charset="utf-8", cte=cte)
    return leaf


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=mime_tree(), crlf=st.booleans())
def test_random_trees_agree_with_the_email_package(tree: EmailMessage, crlf: bool) -> None:
    policy = email.policy.SMTP if crlf else email.policy.default
    raw = tree.as_bytes(policy=policy)
    _leaves_agree(raw)


def test_empty_part_ends_where_it_starts() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\n--x\n\nbody\n--x--\n"
    _leaves_agree(raw)
    empty = parse_tree(raw).children[0]
    assert empty.start == empty.body_start == empty.end


def test_part_without_a_blank_line_has_an_empty_unseparated_body() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n--x--\n"
    _leaves_agree(raw)
    part = parse_tree(raw).children[0]
    assert part.content_type == "text/html"
    assert part.body_start == part.end and not part.separated


_HEADER_LINES = [b"Content-Type: text/html; charset=utf-8",
                 b'Content-Type: multipart/alternative;\r\n boundary="b1"',
                 b"content-type:text/plain", b"Content-Type : text/html", b"Subject: hello",
                 b" folded", b"\tfolded", b"From bob", b"Received: from x\r\n\tby y",
                 b"DKIM-Signature: v=1", b"Content-Transfer-Encoding: base64", b"X-A: a:b",
                 b":empty", b"not a header", b"MIME-Version: 1.0", b"Content-ID: <a@b>",
                 b"CONTENT-DISPOSITION: attachment", b"\xc3\xa9: x", b"X-B: bare \r cr",
                 b"Content-Type: text/plain\r", b"Subject:\r"]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_HEADER_LINES), min_size=1, max_size=8),
       st.sampled_from([b"\n", b"\r\n"]))
def test_mime_headers_read_as_the_whole_header_block_reads(lines: list[bytes],
                                                           eol: bytes) -> None:
    # Only the MIME headers of a part are parsed; what they say must not change, whatever
    # else the block holds (or the block is parsed whole).
    head = eol.join(lines)
    ours = mimetree._headers(head, 0, len(head), "text/plain")  # a multipart needs more
    theirs = email.message_from_bytes(head + b"\n\n", policy=email.policy.compat32)
    for m in (ours, theirs):
        assert isinstance(m, Message)
    assert ours.get_content_type() == theirs.get_content_type()
    assert ours.get_param("charset") == theirs.get_param("charset")
    for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                 "Content-ID", "DKIM-Signature", "MIME-Version"):
        assert ours.get_all(name) == theirs.get_all(name)
