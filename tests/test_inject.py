"""The injector: one pixel in each displayed HTML body, and not one other byte changed."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import quopri
import re
from collections.abc import Iterable
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailseen.core.inject import TagResult, tag_message
from mailseen.core.pixel import own_url, pixel_tag, pixel_url
from mailseen.core.tokens import TokenRef, TokenSigner

SIGNER = TokenSigner(b"test-secret-key-0123456789abcdef")
TOKEN = SIGNER.make(TokenRef(7))
URL = pixel_url("https://track.example", TOKEN)
TAG = pixel_tag(URL)
OLD_TOKEN = SIGNER.make(TokenRef(3))
OLD_PIXEL = f'<img src="https://old.example/t/{OLD_TOKEN}.gif" width="1" height="1" alt="">'
FOREIGN = '<img src="https://cdn.example/t/x.gif" width="600" alt="banner">'
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "newsletters"
TOP = ("From: Ann <ann@example.com>\nTo: bob@example.org\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
       "Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <m1@example.com>\nMIME-Version: 1.0\n")


def is_own_pixel(url: str) -> bool:
    """As ``Sender.is_own_pixel``."""
    return own_url(url, "https://track.example",
                   lambda t: SIGNER.check(t) is not None) is not None


def tag(raw: bytes) -> TagResult:
    return tag_message(raw, TAG, is_own_pixel)


# --- building messages by hand -----------------------------------------------------------

def encode_body(data: bytes, cte: str) -> bytes:
    if cte == "base64":
        return base64.encodebytes(data)
    if cte == "quoted-printable":
        return quopri.encodestring(data)
    return data


def leaf(ctype: str, data: bytes, cte: str | None = None, *, params: str = "",
         disposition: str | None = None, headers: str = "") -> bytes:
    head = f"Content-Type: {ctype}{params}\n"
    if cte is not None:
        head += f"Content-Transfer-Encoding: {cte}\n"
    if disposition is not None:
        head += f"Content-Disposition: {disposition}\n"
    return (head + headers + "\n").encode() + encode_body(data, cte or "7bit")


def html_leaf(html: str, charset: str = "utf-8", cte: str = "quoted-printable", **kw: str
              ) -> bytes:
    return leaf("text/html", html.encode(charset), cte, params=f'; charset="{charset}"', **kw)


def text_leaf(text: str = "Hello in plain text.\n", cte: str = "7bit") -> bytes:
    return leaf("text/plain", text.encode(), cte, params='; charset="utf-8"')


def multipart(subtype: str, children: Iterable[bytes], params: str = "", headers: str = ""
              ) -> bytes:
    children = list(children)
    # Derived from the content, so the same drawn tree always gives the same bytes.
    b = "=_part_" + hashlib.sha1(b"".join(children) + subtype.encode()).hexdigest()[:16]
    out = f'Content-Type: multipart/{subtype}; boundary="{b}"{params}\n{headers}\n'.encode()
    out += b"This is a multi-part message in MIME format.\n"
    for child in children:
        out += f"--{b}\n".encode() + child + b"\n"
    return out + f"--{b}--\n".encode()


def message(entity: bytes, crlf: bool = False, top: str = TOP) -> bytes:
    raw = top.encode() + entity
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def page(body: str = "<p>Hello</p>", *, head: str = "") -> str:
    return (f'<!DOCTYPE html>\n<html>\n<head><meta charset="utf-8"><title>T</title>{head}'
            f"</head>\n<body>\n{body}\n</body>\n</html>\n")


# --- checking the result -----------------------------------------------------------------

def _parse(raw: bytes, policy: email.policy.Policy = email.policy.default) -> Message:
    return email.message_from_bytes(raw, policy=policy)


def _leaves(msg: Message) -> list[Message]:
    # walk() goes into attached messages too, so their parts are checked as well.
    return [p for p in msg.walk() if not p.is_multipart()]


def _text(part: Message) -> str:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    charset = part.get_param("charset")
    return data.decode(charset if isinstance(charset, str) else "us-ascii", "surrogateescape")


def _head(raw: bytes) -> bytes:
    return raw[: re.search(rb"\r?\n\r?\n", raw).start()]  # type: ignore[union-attr]


def _minus_old_pixels(old: str, new: str) -> int:
    """Assert ``new`` is ``old`` with some of its OLD_PIXELs taken out; return how many."""
    segments = old.split(OLD_PIXEL)
    pos = 0
    gone = 0
    for i, segment in enumerate(segments):
        assert new.startswith(segment, pos), "more than old pixels changed"
        pos += len(segment)
        if i + 1 < len(segments):
            kept = pos + len(OLD_PIXEL)
            if new.startswith(OLD_PIXEL, pos) and new.startswith(segments[i + 1], kept):
                pos = kept
            else:
                gone += 1
    assert pos == len(new), "more than old pixels changed"
    return gone


def check_tagged(raw: bytes, result: TagResult, targets: set[int], *,
                 removed: int | None = 0, at: str = "body", removed_in: set[int] | None = None
                 ) -> list[str]:
    """Assert the invariants; ``targets`` are indexes into the message's leaf parts, and
    ``removed_in`` those where old pixels may go (default: the targets). ``removed`` None
    means whichever old pixels the scanner took for real tags.

    Returns the decoded text of each target, tagged, for further checks.
    """
    assert result.reason is None and result.trackable, result.reason
    assert result.parts_tagged == len(targets)
    if removed is not None:
        assert result.pixels_removed == removed
    total_removed = 0
    out = result.data
    if _mixed_eol(raw):
        # Made one convention first (RFC 5322): the rest must hold of that.
        raw = _ANY_EOL.sub(b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") else b"\n", raw)
        assert not _mixed_eol(out)
    assert _head(out) == _head(raw), "top-level header bytes changed"
    if all(len(line.rstrip(b"\r")) <= 998 for line in raw.split(b"\n")):
        assert all(len(line.rstrip(b"\r")) <= 998 for line in out.split(b"\n"))
    before, after = _parse(raw), _parse(out)
    assert [p.get_content_type() for p in before.walk()] == \
        [p.get_content_type() for p in after.walk()]
    assert [[type(d) for d in p.defects] for p in before.walk()] == \
        [[type(d) for d in p.defects] for p in after.walk()]
    # Every part keeps its headers as written (charset and transfer encoding included).
    raw_before = [p.raw_items() for p in _parse(raw, email.policy.compat32).walk()]
    raw_after = [p.raw_items() for p in _parse(out, email.policy.compat32).walk()]
    assert [list(h) for h in raw_before] == [list(h) for h in raw_after]
    tagged = []
    cleaned = removed_in if removed_in is not None else targets
    for i, (old, new) in enumerate(zip(_leaves(before), _leaves(after), strict=True)):
        if i not in targets and i not in cleaned:
            assert new.get_payload(decode=True) == old.get_payload(decode=True), f"leaf {i}"
            assert URL not in _text(new)
            continue
        old_text, new_text = _text(old), _text(new)
        if i not in targets:
            total_removed += _minus_old_pixels(old_text, new_text)
            continue
        assert new_text.count(URL) == 1, f"leaf {i}"
        start = new_text.index(TAG)
        end = start + len(TAG)
        eol = "\r\n" if new_text[end : end + 2] == "\r\n" else "\n"
        if new_text[start - len(eol) : start] == eol and new_text[end : end + len(eol)] == eol \
                and len(new_text[: start - len(eol)].rsplit("\n", 1)[-1]) > 998 - len(TAG):
            # The pixel stands on a line of its own to keep a long line short.
            total_removed += _minus_old_pixels(
                old_text, new_text[: start - len(eol)] + new_text[end + len(eol) :])
            end += len(eol)
        else:
            total_removed += _minus_old_pixels(old_text, new_text[:start] + new_text[end:])
        rest = new_text[end:].lower()
        if at == "any":
            assert rest.startswith(("</body", "</html")) or rest == "", rest[:80]
        elif at == "body":
            assert rest.startswith("</body"), rest[:80]
        elif at == "html":
            assert rest.startswith("</html"), rest[:80]
        elif at == "end":
            assert rest == "", rest[:80]
        tagged.append(new_text)
    assert total_removed == result.pixels_removed
    return tagged


_ANY_EOL = re.compile(rb"\r\n|\r|\n")


def _mixed_eol(raw: bytes) -> bool:
    return raw.count(b"\r") > 0 and not raw.count(b"\r") == raw.count(b"\n") == \
        raw.count(b"\r\n")


def check_unchanged(raw: bytes, result: TagResult, reason: str) -> None:
    assert result.data == raw
    assert not result.trackable
    assert result.reason is not None and result.reason.startswith(reason), result.reason
    assert result.parts_tagged == 0


# --- single HTML bodies: encodings, charsets, line endings -------------------------------

WORDS = {
    "us-ascii": "Hello there",
    "utf-8": "Gr\u00fc\u00dfe \u2603 \u65e5\u672c \U0001f600",
    "iso-8859-1": "Gr\u00fc\u00dfe, caf\u00e9 \u00a0\u00bd",
    "windows-1252": "\u201cquoted\u201d \u2026 \u20ac 5",
    "shift_jis": "\u65e5\u672c\u8a9e\u306e\u30e1\u30fc\u30eb \uff71",
    "iso-2022-jp": "\u65e5\u672c\u8a9e\u306e\u30e1\u30fc\u30eb",
    "utf-16": "Gr\u00fc\u00dfe \u2603 \u65e5\u672c",
    "utf-16-be": "\u65e5\u672c \u2603",
    "cp500": "Hello EBCDIC",
}
CTES = ["7bit", "8bit", "quoted-printable", "base64"]


def _combos() -> Iterable[tuple[str, str]]:
    for charset in WORDS:
        for cte in CTES:
            wide = charset.startswith("utf-16") or charset == "cp500"
            if cte == "7bit" and (charset not in ("us-ascii", "iso-2022-jp")):
                continue
            if wide and cte != "base64":
                continue
            yield charset, cte


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize(("charset", "cte"), list(_combos()))
def test_html_only_message_gets_one_pixel_before_body_end(charset: str, cte: str,
                                                          crlf: bool) -> None:
    html = page(f"<p>{WORDS[charset]}</p>\n<!-- </body> in a comment -->",
                head="<style>/* </body> */</style>")
    raw = message(html_leaf(html, charset, cte), crlf)
    result = tag(raw)
    check_tagged(raw, result, {0})


@pytest.mark.parametrize("bom", ["be", "le", "none-le"])
def test_utf16_keeps_its_byte_order(bom: str) -> None:
    html = page(f"<p>{WORDS['utf-16']}</p>")
    data = {"be": b"\xfe\xff" + html.encode("utf-16-be"),
            "le": b"\xff\xfe" + html.encode("utf-16-le"),
            "none-le": html.encode("utf-16-le")}[bom]
    raw = message(leaf("text/html", data, "base64", params='; charset="utf-16"'), crlf=True)
    result = tag(raw)
    check_tagged(raw, result, {0})
    out = _leaves(_parse(result.data))[0].get_payload(decode=True)
    assert isinstance(out, bytes)
    assert out[:2] == data[:2]


def test_utf16_big_endian_without_bom_is_spliced_in_its_own_order() -> None:
    html = page("<p>\u65e5\u672c</p>")
    data = html.encode("utf-16-be")
    raw = message(leaf("text/html", data, "base64", params='; charset="utf-16"'))
    result = tag(raw)
    assert result.trackable
    out = _leaves(_parse(result.data))[0].get_payload(decode=True)
    assert isinstance(out, bytes)
    assert out.decode("utf-16-be") == html.replace("</body>", TAG + "</body>")


def test_quoted_printable_part_keeps_every_decoded_byte() -> None:
    # Bare CR, trailing white space, "=" signs, lowercase escapes, soft breaks, a long line,
    # and several blank lines at the end: all must decode exactly as before.
    body = (b"<html><body>\n<p>a=3Db =3d c</p>=0D\n<p>trailing space=20\n"
            b"<p>soft=\nbreak</p>\n<p>" + b"x" * 74 + b"=\n" + b"y" * 74 + b"</p>\n"
            b"<p>\xe9 raw 8-bit byte</p>\n</body></html>\n\n\n")
    part = (b'Content-Type: text/html; charset="iso-8859-1"\n'
            b"Content-Transfer-Encoding: quoted-printable\n\n" + body)
    for crlf in (False, True):
        raw = message(part, crlf)
        check_tagged(raw, tag(raw), {0})


def test_quoted_printable_output_lines_stay_within_76() -> None:
    html = page("<p>" + "\u00e9" * 400 + "</p>" + "a " * 300)
    raw = message(html_leaf(html, "utf-8", "quoted-printable"), crlf=True)
    result = tag(raw)
    check_tagged(raw, result, {0})
    body = result.data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_quoted_printable_lines_away_from_the_pixel_keep_their_encoded_bytes() -> None:
    # As another encoder wrote them (lowercase escapes, a needless "=20", its own soft
    # breaks): only the line that gets the pixel is encoded anew.
    kept = (b"<html><body>\n<p>caf=c3=a9 au=20lait</p>\n<p>" + b"a" * 40 + b"=\n" + b"b" * 40 +
            b"</p>\n")
    for crlf in (False, True):
        raw = message(html_leaf("", "utf-8", "quoted-printable") + kept +
                      b"</body></html>\n<p>after</p>\n", crlf)
        result = tag(raw)
        check_tagged(raw, result, {0})
        eol = b"\r\n" if crlf else b"\n"
        body = result.data.split(eol + eol, 1)[1]
        assert body.startswith(kept.replace(b"\n", eol))
        assert body.endswith(b"</body></html>" + eol + b"<p>after</p>" + eol)


def test_quoted_printable_with_escaped_line_breaks_still_decodes_exactly() -> None:
    # "=0D=0A" decodes to a line break that is not one of the encoded lines', so the encoded
    # lines cannot be kept one for one: the body is encoded afresh, every byte decoding as
    # before.
    for body in (b"<html><body>=0D=0A<p>x</p>\r\n</body></html>\r\n<p>y</p>\r\n",
                 b"<html><body>\r\n<p>x</p>\r\n</body></html>=0D=0A<p>y</p>\r\n",
                 b"<html><body>\r\n<p>x</p>=0D=0A\r\n</body>=0A</html>\r\n"):
        raw = message(html_leaf("", "utf-8", "quoted-printable"), crlf=True) + body
        check_tagged(raw, tag(raw), {0})


def test_old_pixel_far_above_the_new_one_in_quoted_printable() -> None:
    html = page(f"<blockquote>{OLD_PIXEL}</blockquote>" + "<p>line</p>\n" * 200)
    raw = message(html_leaf(html, "utf-8", "quoted-printable"), crlf=True)
    check_tagged(raw, tag(raw), {0}, removed=1)


def test_a_boundary_inside_a_line_is_not_a_delimiter() -> None:
    html_part = html_leaf(page("<p>x--=_b and =_b--</p>\n<p> --=_b</p>"), "utf-8", "8bit")
    b = "=_b"
    entity = (f'Content-Type: multipart/alternative; boundary="{b}"\n\n--{b}\n'.encode()
              + text_leaf() + f"\nx--{b}\n--{b}\n".encode() + html_part + f"\n--{b}--\n".encode())
    for crlf in (False, True):
        raw = message(entity, crlf)
        (html,) = check_tagged(raw, tag(raw), {1})
        assert "x--=_b and =_b--" in html


def test_base64_part_ends_the_way_it_ended() -> None:
    html = page()
    for trailing in (b"", b"\n"):
        data = base64.encodebytes(html.encode()).rstrip(b"\n") + trailing
        raw = message(leaf("text/html", b"", "base64") + data, crlf=True)
        result = tag(raw)
        check_tagged(raw, result, {0})
        assert result.data.endswith(b"\r\n") == bool(trailing)


def test_long_8bit_line_gets_the_pixel_on_a_line_of_its_own() -> None:
    html = "<html><body>" + "<p>" + "x" * 970 + "</p></body></html>\n"
    for crlf in (False, True):
        raw = message(html_leaf(html, "utf-8", "8bit"), crlf)
        result = tag(raw)
        check_tagged(raw, result, {0})


@pytest.mark.parametrize(("marked", "at"), [
    ("<html><body><p>x</p></BODY >\n</html>", "body"),
    ("<html><p>no body</p></html>", "html"),
    ("<p>neither</p>", "end"),
    ("<html><body>x</body>\n<!--[if mso]></body><![endif]-->\n</html>", "body"),
    ("<html><body>x</body>\n<![if !mso]></body><![endif]>\n</html>", "body"),
    ("<html><body>x</body><script>var s = '</body>';</script></html>", "body"),
    ("<html><body>x</body><style>/* </body> */</style></html>", "body"),
    ("<html><body>x</body><textarea></body></textarea></html>", "body"),
    ("<html><head><title></body></title></head></html>", "html"),
    ('<html><body>x</body><a title="</body>">y</a></html>', "body"),
    ("<html><body>x</body>\n<!-- </body> -->\n", "body"),
])
def test_tricky_markup_in_a_message(marked: str, at: str) -> None:
    raw = message(html_leaf(marked, "utf-8", "quoted-printable"), crlf=True)
    check_tagged(raw, tag(raw), {0}, at=at)


def test_pixel_tag_is_a_tiny_image_with_an_absolute_url() -> None:
    assert re.fullmatch(r"https://track\.example/t/[A-Za-z0-9_-]{1,32}\.gif", URL)
    for attr in ('width="1"', 'height="1"', 'alt=""', 'border="0"'):
        assert attr in TAG
    style = re.search(r'style="([^"]*)"', TAG)
    assert style is not None
    rules = dict(r.split(":", 1) for r in style.group(1).split(";") if r)
    assert rules["border"] == "0"
    assert rules["display"] == "block"  # no line box around it
    for prop in ("width", "height", "max-width", "max-height", "margin", "padding"):
        assert rules[prop] in ("0", "0px"), prop


# --- which parts get the pixel -----------------------------------------------------------

def test_every_html_alternative_is_tagged_and_text_is_not() -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.org", "Hi"
    msg.set_content("Plain text\n")
    msg.add_alternative(page("<p>HTML one</p>"), subtype="html")
    msg.add_alternative(page("<p>HTML two</p>"), subtype="html", cte="base64")
    for policy in (email.policy.SMTP, email.policy.default):
        raw = msg.as_bytes(policy=policy)
        check_tagged(raw, tag(raw), {1, 2})


def test_amp_and_calendar_alternatives_are_left_alone() -> None:
    amp = '<!doctype html><html \u26a14email><head></head><body>amp</body></html>'
    raw = message(multipart("alternative", [
        text_leaf(),
        leaf("text/x-amp-html", amp.encode(), "8bit", params="; charset=utf-8"),
        html_leaf(page()),
        leaf("text/calendar", b"BEGIN:VCALENDAR\nMETHOD:REQUEST\nEND:VCALENDAR\n", "7bit",
             params="; method=REQUEST"),
    ]), crlf=True)
    check_tagged(raw, tag(raw), {2})
    calendar_only = message(multipart("alternative", [
        text_leaf(), leaf("text/calendar", b"BEGIN:VCALENDAR\nEND:VCALENDAR\n", "7bit"),
        leaf("text/x-amp-html", amp.encode(), "8bit")]))
    check_unchanged(calendar_only, tag(calendar_only), "plain text")


def test_related_root_is_the_first_part_without_start() -> None:
    raw = message(multipart("related", [
        html_leaf(page('<img src="cid:logo@x">')),
        leaf("image/png", b"\x89PNG\r\n\x1a\nfake", "base64", headers="Content-ID: <logo@x>\n"),
        html_leaf(page("<p>not the root</p>"), headers="Content-ID: <other@x>\n"),
    ]))
    check_tagged(raw, tag(raw), {0})


@pytest.mark.parametrize("start", ['"<root@x>"', "<root@x>", '"root@x"'])
def test_related_root_is_the_part_named_by_start(start: str) -> None:
    raw = message(multipart("related", [
        html_leaf(page("<p>not the root</p>"), headers="Content-ID: <first@x>\n"),
        leaf("image/png", b"fake", "base64", headers="Content-ID: <logo@x>\n"),
        html_leaf(page("<p>root</p>"), headers="Content-ID: <root@x>\n"),
    ], params=f'; type="text/html"; start={start}'), crlf=True)
    check_tagged(raw, tag(raw), {2})


def test_related_root_may_be_an_alternative() -> None:
    msg = MIMEMultipart("related")
    alt = MIMEMultipart("alternative")
    alt.attach(MIMEText("plain", "plain"))
    alt.attach(MIMEText(page('<img src="cid:img1">'), "html", "utf-8"))
    msg.attach(alt)
    img = MIMEImage(b"GIF89a fake", "gif")
    img["Content-ID"] = "<img1>"
    msg.attach(img)
    msg["Subject"] = "related"
    raw = msg.as_bytes()
    check_tagged(raw, tag(raw), {1})


def test_mixed_with_attachments_tags_only_the_body() -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.org", "Files"
    msg.set_content("Plain\n")
    msg.add_alternative(page("<p>body</p>"), subtype="html")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                       filename="a.pdf")
    msg.add_attachment(page("<p>an attached page</p>"), subtype="html", filename="page.html")
    raw = msg.as_bytes(policy=email.policy.SMTP)
    check_tagged(raw, tag(raw), {1})


def test_alternative_in_mixed_in_related() -> None:
    raw = message(multipart("related", [
        multipart("mixed", [
            multipart("alternative", [text_leaf(), html_leaf(page('<img src="cid:a">'))]),
            leaf("application/pdf", b"%PDF", "base64", disposition='attachment; filename="x"'),
        ]),
        leaf("image/png", b"png", "base64", headers="Content-ID: <a>\n"),
    ]), crlf=True)
    check_tagged(raw, tag(raw), {1})


def test_apple_mail_mixed_tags_only_the_last_inline_html_leaf() -> None:
    raw = message(multipart("alternative", [
        text_leaf(),
        multipart("mixed", [
            html_leaf("<html><body><p>first</p></body></html>", "utf-8", "7bit"),
            leaf("image/jpeg", b"jpeg", "base64", disposition='inline; filename="a.jpg"'),
            html_leaf("<html><body><p>second</p></body></html>", "utf-8", "quoted-printable"),
            leaf("image/jpeg", b"jpeg", "base64", disposition='inline; filename="b.jpg"'),
            html_leaf("<html><body><p>last</p></body></html>", "utf-8", "7bit"),
            leaf("application/pdf", b"pdf", "base64", disposition='attachment; filename="c"'),
        ]),
    ]))
    check_tagged(raw, tag(raw), {5})


def test_attached_message_is_never_touched() -> None:
    inner = message(multipart("alternative", [text_leaf(), html_leaf(page("<p>inner</p>"))]),
                    top="From: x@example.com\nSubject: forwarded\nMIME-Version: 1.0\n")
    for disposition in ("attachment", "inline", None):
        raw = message(multipart("mixed", [
            multipart("alternative", [text_leaf(), html_leaf(page("<p>outer</p>"))]),
            leaf("message/rfc822", inner, None, disposition=disposition),
        ]), crlf=True)
        check_tagged(raw, tag(raw), {1})


def test_attached_message_with_old_pixel_keeps_it() -> None:
    inner = message(html_leaf(page(OLD_PIXEL)), top="Subject: old\n")
    raw = message(multipart("mixed", [html_leaf(page()), leaf("message/rfc822", inner)]))
    result = tag(raw)
    check_tagged(raw, result, {0})
    assert OLD_TOKEN.encode() in result.data


def test_only_html_in_attachments_means_plain_text() -> None:
    raw = message(multipart("mixed", [
        text_leaf(),
        html_leaf(page(), disposition='attachment; filename="page.html"'),
        leaf("message/rfc822", message(html_leaf(page()), top="Subject: x\n")),
    ]))
    check_unchanged(raw, tag(raw), "plain text")


@pytest.mark.parametrize("raw", [
    message(text_leaf()),
    message(b"\nJust a body without MIME headers\n", top="From: a@example.com\n"),
    message(multipart("alternative", [text_leaf(), text_leaf("second\n")])),
], ids=["text-plain", "no-content-type", "two-texts"])
def test_plain_text_goes_out_unchanged(raw: bytes) -> None:
    check_unchanged(raw, tag(raw), "plain text")


# --- hands off: signed, encrypted, broken --------------------------------------------------

SIGNED = multipart("signed", [
    multipart("alternative", [text_leaf(), html_leaf(page())]),
    leaf("application/pkcs7-signature", b"sig", "base64",
         disposition='attachment; filename="smime.p7s"'),
], params='; protocol="application/pkcs7-signature"; micalg=sha-256')


@pytest.mark.parametrize("raw", [
    message(SIGNED),
    message(multipart("mixed", [SIGNED, leaf("application/pdf", b"x", "base64")])),
    message(multipart("encrypted", [leaf("application/pgp-encrypted", b"Version: 1\n"),
                                    leaf("application/octet-stream", b"-----BEGIN PGP")],
                      params='; protocol="application/pgp-encrypted"')),
    message(leaf("application/pkcs7-mime", b"opaque", "base64",
                 params="; smime-type=enveloped-data; name=smime.p7m")),
    message(leaf("application/x-pkcs7-mime", b"opaque", "base64")),
    message(html_leaf(page()), top="DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s;\n"
                                   " b=abc\n" + TOP),
    message(html_leaf(page()), top=TOP + "dkim-signature: v=1; d=example.com; b=x\n"),
], ids=["signed", "signed-in-mixed", "encrypted", "pkcs7", "x-pkcs7", "dkim", "dkim-lower"])
def test_signed_and_encrypted_messages_go_out_unchanged(raw: bytes) -> None:
    check_unchanged(raw, tag(raw), "signed")


@pytest.mark.parametrize(("raw", "why"), [
    (message(b"Content-Type: multipart/alternative\n\n--x\n\n<p>x</p>\n--x--\n"),
     "boundary"),
    (message(b'Content-Type: multipart/alternative; boundary="x"\n\n--y\n'
             b"Content-Type: text/html\n\n<p>x</p>\n--y--\n"), "boundary"),
    (message(b"Content-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
             b"PGh0bWw+!!!notbase64\n"), "base64"),
    (message(multipart("alternative", [
        text_leaf(), b"Content-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGh0b\n"])),
     "base64"),
    (message(html_leaf(page(), "utf-8", "8bit").replace(b'charset="utf-8"',
                                                        b'charset="x-klingon"')), "charset"),
    (message(b"Content-Type: text/html\nContent-Transfer-Encoding: x-uuencode\n\nbegin\n"),
     "encoding"),
    (message(b'Content-Type: text/html; charset="utf-16"\nContent-Transfer-Encoding: base64'
             b"\n\n" + base64.encodebytes(b"\xff\xfe<\x00h\x00\x00\xd8")), "utf-16"),
    (message(multipart("alternative", [text_leaf(), html_leaf(page())]).rsplit(b"--=_", 1)[0]),
     "without its closing boundary"),
    (message(multipart("mixed", [multipart("alternative", [text_leaf(), html_leaf(page())])
                                 .rsplit(b"--=_", 1)[0], text_leaf()])),
     "without its closing boundary"),
    (message(re.sub(rb"\n--=_part_\w+\n(?=Content-Type: text/html)", b"\n",
                    multipart("mixed", [html_leaf(page()), text_leaf()]).replace(
                        b"This is a multi-part message in MIME format.\n", b""))),
     "no opening boundary"),
    (message(b"Content-Type: multipart/alternative\n\n" + html_leaf(page())),
     "without a boundary"),
], ids=["no-boundary", "boundary-never-appears", "bad-base64", "truncated-base64",
        "unknown-charset", "unknown-encoding", "undecodable-utf16", "no-closing-boundary",
        "nested-no-closing-boundary", "no-opening-boundary", "multipart-without-boundary"])
def test_broken_mime_goes_out_unchanged(raw: bytes, why: str) -> None:
    result = tag(raw)
    check_unchanged(raw, result, "broken MIME: ")
    assert result.reason is not None and why in result.reason


@pytest.mark.parametrize("cte", ["8bit", "7bit", "binary", None])
@pytest.mark.parametrize("crlf", [False, True])
def test_a_tagged_body_with_lines_over_998_octets_goes_quoted_printable(
        cte: str | None, crlf: bool) -> None:
    html = page("<p>" + "word " * 400 + "</p>")  # one 2,000-octet line
    raw = message(multipart("alternative", [text_leaf(), html_leaf(html, "utf-8", cte)]), crlf)
    result = tag(raw)
    assert result.trackable and result.parts_tagged == 1, result.reason
    eol = b"\r\n" if crlf else b"\n"
    assert max(len(line) for line in result.data.split(eol)) <= 76 + 2
    [_, part] = _leaves(_parse(result.data))
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert part.get_all("Content-Transfer-Encoding") == ["quoted-printable"]
    assert _text(part) == html.replace("\n", eol.decode()).replace("</body>", TAG + "</body>")
    # The text alternative and the top-level header keep their bytes.
    assert result.data.startswith(_head(raw))
    assert text_leaf().replace(b"\n", eol) in result.data


def test_a_single_part_message_with_long_lines_says_quoted_printable_at_the_top() -> None:
    html = page("<p>" + "\u00e9" * 1200 + "</p>")
    raw = message(html_leaf(html, "utf-8", "8bit"))
    result = tag(raw)
    assert result.trackable
    assert max(len(line) for line in result.data.split(b"\n")) <= 76
    msg = _parse(result.data)
    assert msg.get_all("Content-Transfer-Encoding") == ["quoted-printable"]
    assert msg["Subject"] == "Gr\u00fc\u00dfe"
    assert _text(msg) == html.replace("</body>", TAG + "</body>")


@pytest.mark.parametrize("first", [b"\r\n", b"\n"])
def test_mixed_line_endings_and_bare_crs_become_one_convention(first: bytes) -> None:
    raw = message(multipart("alternative", [
        text_leaf("line one\r\nline two\rline three\n"),
        html_leaf(page("<p>a</p>\r<p>b</p>\r\n<p>c</p>"), "utf-8", "8bit")]))
    raw = raw.replace(b"\n", first, 1)  # the first line decides
    result = tag(raw)
    assert result.trackable and result.parts_tagged == 1, result.reason
    out = result.data
    if first == b"\r\n":
        assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")
    else:
        assert b"\r" not in out
    [text, html] = _leaves(_parse(out))
    assert _text(text).splitlines() == ["line one", "line two", "line three"]
    assert TAG in _text(html)


def test_a_message_with_one_convention_keeps_its_bytes_around_the_pixel() -> None:
    raw = message(multipart("alternative", [text_leaf(), html_leaf(page())]), crlf=True)
    check_tagged(raw, tag(raw), {1})


def test_one_broken_body_leaves_the_other_untouched_too() -> None:
    raw = message(multipart("alternative", [
        text_leaf(), html_leaf(page()),
        b"Content-Type: text/html\nContent-Transfer-Encoding: base64\n\n%%%\n"]))
    check_unchanged(raw, tag(raw), "broken MIME: ")


# --- our old pixels ------------------------------------------------------------------------

def test_old_pixel_in_a_quoted_reply_is_replaced_and_foreign_ones_kept() -> None:
    reply = page(f"<p>Thanks</p>\n<blockquote><p>Earlier</p>{FOREIGN}\n{OLD_PIXEL}"
                 "</blockquote>")
    msg = EmailMessage()
    msg.set_content("Thanks\n> Earlier\n")
    msg.add_alternative(reply, subtype="html", cte="quoted-printable")
    raw = msg.as_bytes(policy=email.policy.SMTP)
    result = tag(raw)
    (tagged,) = check_tagged(raw, result, {1}, removed=1)
    assert OLD_TOKEN not in tagged
    assert FOREIGN in tagged


@pytest.mark.parametrize("src", [
    f"https://track.example/t/{TokenSigner(b'an-older-secret-key-0123456789ab').make(TokenRef(3))}.gif",
    "https://track.example/t/from-another-node.gif",
    f"https://track.example/t/./{OLD_TOKEN}.gif",
    f"https://track.example\\t\\{OLD_TOKEN}.gif",
    f"https://old.example/%74/{OLD_TOKEN}.gif",
], ids=["older-key", "another-node", "dot-segment", "backslashes", "percent-encoded"])
def test_any_image_under_our_t_path_is_removed_whatever_its_token(src: str) -> None:
    quoted = f'<img src="{src}" width="1" height="1" alt="">'
    raw = message(multipart("alternative", [
        text_leaf(), html_leaf(page(f"<p>Thanks</p><blockquote>{quoted}{FOREIGN}</blockquote>"),
                               "utf-8", "quoted-printable")]))
    result = tag(raw)
    assert result.trackable and result.pixels_removed == 1
    [_, part] = _leaves(_parse(result.data))
    assert _text(part) == page(f"<p>Thanks</p><blockquote>{FOREIGN}</blockquote>").replace(
        "</body>", TAG + "</body>")


def test_old_pixel_in_an_earlier_inline_html_leaf_is_removed_too() -> None:
    raw = message(multipart("mixed", [
        html_leaf(page(f"<p>first</p>{OLD_PIXEL}"), "utf-8", "base64"),
        leaf("image/png", b"png", "base64", disposition="inline"),
        html_leaf(page("<p>last</p>"), "utf-8", "7bit"),
    ]))
    result = tag(raw)
    check_tagged(raw, result, {2}, removed=1, removed_in={0})


def test_empty_tag_only_cleans_and_leaves_clean_parts_byte_identical() -> None:
    clean = message(multipart("alternative", [text_leaf(), html_leaf(page(), "utf-8", "base64")]))
    result = tag_message(clean, "", is_own_pixel)
    assert result.data == clean and result.pixels_removed == 0
    dirty = message(html_leaf(page(OLD_PIXEL), "utf-8", "quoted-printable"))
    result = tag_message(dirty, "", is_own_pixel)
    assert result.pixels_removed == 1
    assert OLD_TOKEN.encode() not in result.data


# --- real-world HTML -----------------------------------------------------------------------

def _corpus() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(CORPUS.glob("*.html"))


class _BodyEnd(HTMLParser):
    """A reference tokenizer's view: the start tags and text met, and where body ends.

    Comments (Outlook's conditional comments included) are not tags; neither is anything
    inside a downlevel-revealed ``<![if …]>…<![endif]>`` block, nor in a title or textarea.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[str] = []  # "ours", "tag", "text", "body", "/body"
        self.hidden = 0
        self.rcdata: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.hidden or self.rcdata:
            return
        if tag in ("title", "textarea"):
            self.rcdata = tag
        if tag == "img" and dict(attrs).get("src") == URL:
            self.events.append("ours")
        else:
            self.events.append("body" if tag == "body" else "tag")

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        if self.rcdata:
            if tag == self.rcdata:
                self.rcdata = None
            return
        if not self.hidden and tag == "body":
            self.events.append("/body")

    def handle_data(self, data: str) -> None:
        if not self.hidden and not self.rcdata and data.strip():
            self.events.append("text")

    def unknown_decl(self, data: str) -> None:
        word = data.strip().lower()
        if word.startswith("if"):
            self.hidden += 1
        elif word.startswith("endif") and self.hidden:
            self.hidden -= 1


def assert_pixel_last_in_body(html: str) -> None:
    parser = _BodyEnd()
    parser.feed(html)
    parser.close()
    events = parser.events
    assert events.count("ours") == 1
    end = len(events) - 1 - events[::-1].index("/body") if "/body" in events else len(events)
    before_end = [e for e in events[:end] if e in ("ours", "tag", "text")]
    assert before_end[-1] == "ours", "something visible follows the pixel"
    if "body" in events:
        assert events.index("body") < events.index("ours")


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    files = _corpus()
    if not files:
        pytest.skip(f"corpus not found at {CORPUS}")
    return files


def test_corpus_is_complete(corpus: list[Path]) -> None:
    assert len(corpus) == 37


@pytest.mark.parametrize("shape", ["html-only", "alternative"])
@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_corpus_gets_the_pixel_at_the_end_of_the_body(corpus: list[Path], shape: str,
                                                      cte: str) -> None:
    for path in corpus:
        data = path.read_bytes()
        if cte == "8bit" and any(len(line) > 998 for line in data.split(b"\n")):
            continue
        html_part = leaf("text/html", data, cte, params='; charset="utf-8"')
        entity = html_part if shape == "html-only" else multipart(
            "alternative", [text_leaf("Plain version\n"), html_part])
        for crlf in (False, True):
            raw = message(entity, crlf)
            result = tag(raw)
            (tagged,) = check_tagged(raw, result, {0 if shape == "html-only" else 1},
                                     at="any")
            try:
                assert_pixel_last_in_body(tagged)
            except AssertionError as exc:
                raise AssertionError(f"{path.name} ({cte}, {shape}): {exc}") from exc


def test_pixel_url_is_absolute_and_escaped_in_the_tag() -> None:
    assert pixel_url("https://t.example/base/", "abc") == "https://t.example/base/t/abc.gif"
    for relative in ("/t", "t.example", "ftp://t.example", ""):
        with pytest.raises(ValueError):
            pixel_url(relative, "abc")
    assert 'src="https://t.example/t/a.gif?x=1&amp;y=&quot;"' in pixel_tag(
        'https://t.example/t/a.gif?x=1&y="')


def test_reference_check_notices_a_misplaced_pixel() -> None:
    assert_pixel_last_in_body(f"<html><body><p>x</p>{TAG}</body></html>")
    for wrong in (f"<html><body>{TAG}<p>x</p></body></html>",
                  f"<html><body><p>x</p></body>{TAG}</html>",
                  f"<html><body><p>x{TAG}</p>tail</body></html>"):
        with pytest.raises(AssertionError):
            assert_pixel_last_in_body(wrong)


# --- property-based: random HTML, random MIME trees, random damage -------------------------

HTML_PIECES = [
    "<html>", "</html>", "<body>", "</body>", "</BODY >", "<head>", "</head>", "<p>", "</p>",
    "text", " ", "\n", "<", ">", "'", '"', "=", "-", "<!--", "-->", "<!-->",
    "<!--[if mso]>", "<![endif]-->", "<![if !mso]>", "<![endif]>", "<script>", "</script>",
    "<style>", "</style>", "<title>", "</title>", "<textarea>", "</textarea>", '<a title="',
    "<a title=", '">', "<![CDATA[", "]]>", "<?", "?>", "&amp;", "=3D", "\t",
    OLD_PIXEL, FOREIGN,
]
SAFE_CHARSETS = ["us-ascii", "utf-8", "iso-8859-1", "windows-1252", "shift_jis", "iso-2022-jp",
                 "utf-16"]


@st.composite
def html_text(draw: st.DrawFn, charset: str = "utf-8") -> str:
    pieces = [*HTML_PIECES, WORDS[charset]]
    return "".join(draw(st.lists(st.sampled_from(pieces), max_size=25)))


@st.composite
def html_entity(draw: st.DrawFn, disposition: str | None = None) -> bytes:
    charset = draw(st.sampled_from(SAFE_CHARSETS))
    html = draw(html_text(charset))
    data = html.encode("utf-16" if charset == "utf-16" else charset)
    if charset == "utf-16":
        cte = "base64"
    elif data.isascii():
        cte = draw(st.sampled_from(CTES))
    else:
        cte = draw(st.sampled_from(CTES[1:] if charset != "iso-2022-jp" else CTES))
    return leaf("text/html", data, cte, params=f'; charset="{charset}"',
                disposition=disposition)


@st.composite
def mime_entity(draw: st.DrawFn, depth: int = 0) -> bytes:
    if depth < 3 and draw(st.integers(0, 2)) == 0:
        subtype = draw(st.sampled_from(["alternative", "related", "mixed", "report"]))
        children = draw(st.lists(mime_entity(depth + 1), min_size=1, max_size=4))
        params = ""
        if subtype == "related":
            children = [f"Content-ID: <c{i}@x>\n".encode() + c for i, c in enumerate(children)]
            if draw(st.booleans()):
                params = f'; start="<c{draw(st.integers(0, len(children)))}@x>"'
        return multipart(subtype, children, params)
    kind = draw(st.sampled_from(["html", "html", "html", "text", "amp", "calendar", "image",
                                 "html-attachment", "message", "pdf"]))
    if kind == "html":
        disposition = draw(st.sampled_from([None, "inline", 'inline; filename="a.html"']))
        return draw(html_entity(disposition))
    if kind == "html-attachment":
        return draw(html_entity('attachment; filename="a.html"'))
    if kind == "text":
        return text_leaf(draw(st.sampled_from(["plain\n", "</body>\n", OLD_PIXEL])))
    if kind == "amp":
        return leaf("text/x-amp-html", b"<html \xe2\x9a\xa14email><body>amp</body></html>",
                    "8bit", params="; charset=utf-8")
    if kind == "calendar":
        return leaf("text/calendar", b"BEGIN:VCALENDAR\nEND:VCALENDAR\n", "7bit")
    if kind == "image":
        return leaf("image/png", draw(st.binary(max_size=64)), "base64",
                    disposition=draw(st.sampled_from([None, "inline", "attachment"])))
    if kind == "message":
        inner = draw(mime_entity(depth + 1))
        return leaf("message/rfc822", b"Subject: inner\nMIME-Version: 1.0\n" + inner, None,
                    disposition=draw(st.sampled_from([None, "attachment"])))
    return leaf("application/pdf", b"%PDF-1.4", "base64", disposition="attachment")


def _cid(part: Message) -> str:
    return str(part.get("Content-ID", "")).strip(" <>")


def expected_targets(part: Message, displayed: bool = False) -> list[Message]:
    """The spec's rule, restated over the email package's tree. With ``displayed``: every
    HTML body a reader shows inline (where old pixels are removed)."""
    if part.get_content_disposition() == "attachment":
        return []
    if part.get_content_type() == "text/html":
        return [part]
    if part.get_content_maintype() != "multipart":
        return []
    kids = part.get_payload()
    assert isinstance(kids, list)
    if part.get_content_subtype() == "related":
        start = part.get_param("start")
        named = [k for k in kids if isinstance(start, str) and _cid(k) == start.strip("<>")]
        return expected_targets(named[0] if named else kids[0], displayed)
    if displayed or part.get_content_subtype() == "alternative":
        return [t for k in kids for t in expected_targets(k, displayed)]
    for kid in reversed(kids):
        found = expected_targets(kid)
        if found:
            return found
    return []


def check_against_rule(raw: bytes, result: TagResult) -> None:
    msg = _parse(raw)
    leaves = _leaves(msg)
    targets = {i for i, p in enumerate(leaves) if any(p is t for t in expected_targets(msg))}
    shown = {i for i, p in enumerate(leaves)
             if any(p is t for t in expected_targets(msg, displayed=True))}
    if not targets:
        check_unchanged(raw, result, "plain text")
        return
    check_tagged(raw, result, targets, removed=None, removed_in=shown, at="any")


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entity=mime_entity(), crlf=st.booleans())
def test_random_mime_trees_get_pixels_exactly_where_the_rule_says(entity: bytes,
                                                                  crlf: bool) -> None:
    raw = message(entity, crlf)
    check_against_rule(raw, tag(raw))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html=html_entity(), crlf=st.booleans(), alternative=st.booleans())
def test_random_html_bodies_keep_everything_but_the_pixel(html: bytes, crlf: bool,
                                                          alternative: bool) -> None:
    entity = multipart("alternative", [text_leaf(), html]) if alternative else html
    raw = message(entity, crlf)
    check_against_rule(raw, tag(raw))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=400), cte=st.sampled_from(CTES[1:]), crlf=st.booleans())
def test_random_bytes_in_an_html_part_survive(data: bytes, cte: str, crlf: bool) -> None:
    raw = message(leaf("text/html", b"<html><body>" + data + b"</body></html>", cte,
                       params='; charset="windows-1252"'), crlf)
    check_tagged(raw, tag(raw), {0}, at="any")


@st.composite
def email_package_tree(draw: st.DrawFn, depth: int = 0) -> Message:
    if depth < 3 and draw(st.booleans()):
        msg = MIMEMultipart(draw(st.sampled_from(["mixed", "alternative", "related"])))
        for _ in range(draw(st.integers(1, 3))):
            msg.attach(draw(email_package_tree(depth + 1)))
        return msg
    kind = draw(st.sampled_from(["html", "html", "plain", "app"]))
    if kind == "app":
        return MIMEApplication(draw(st.binary(max_size=50)), "octet-stream")
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1", "us-ascii"]))
    text = draw(html_text(charset if charset != "us-ascii" else "us-ascii"))
    part = MIMEText(text, "html" if kind == "html" else "plain", charset)
    if draw(st.booleans()):
        part.add_header("Content-Disposition", "attachment", filename="x.html")
    return part


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=email_package_tree(), smtp=st.booleans())
def test_random_email_package_messages(tree: Message, smtp: bool) -> None:
    tree["Subject"] = "random"
    raw = tree.as_bytes(policy=email.policy.SMTP if smtp else email.policy.compat32)
    check_against_rule(raw, tag(raw))


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    raw = message(draw(mime_entity()), draw(st.booleans()))
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 20))
        junk = draw(st.sampled_from([b"", b"--", b"\n", b"\r\n\r\n", b"=", b"\xff", b"<",
                                     b"Content-Type: multipart/mixed\n", b"boundary=",
                                     b"charset=utf-16", b"base64", b"\x00"]))
        raw = raw[:at] + junk + raw[at + cut :]
    return raw


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=st.one_of(damaged(), st.binary(max_size=300)))
def test_damaged_messages_never_raise_and_are_never_half_rewritten(raw: bytes) -> None:
    result = tag(raw)
    if not result.trackable:
        assert result.data == raw
        assert result.reason in ("plain text", "signed") or \
            (result.reason is not None and result.reason.startswith("broken MIME: "))
    else:
        assert result.parts_tagged >= 1
        if _mixed_eol(raw):  # made one convention first
            assert not _mixed_eol(result.data)
            raw = _ANY_EOL.sub(b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") else b"\n", raw)
        if re.search(rb"\r?\n\r?\n", raw):
            # Only a long-lined body's Content-Transfer-Encoding may change at the top.
            assert _without_cte(_head(result.data)) == _without_cte(_head(raw))


def _without_cte(head: bytes) -> bytes:
    return re.sub(rb"(?im)^content-transfer-encoding[ \t]*:.*(?:\r?\n[ \t].*)*(?:\r?\n|\Z)",
                  b"", head).rstrip(b"\r\n")


def test_empty_html_body_gets_the_pixel() -> None:
    raw = message(multipart("alternative", [text_leaf(), b"Content-Type: text/html\n\n"]))
    check_tagged(raw, tag(raw), {1}, at="end")


def test_html_part_without_a_blank_line_after_its_headers_is_not_rewritten() -> None:
    # Anything put there would join the last header line.
    raw = message(b"Content-Type: multipart/alternative; boundary=b\n\n--b\n\ntext\n"
                  b"--b\nContent-Type: text/html\nContent-Transfer-Encoding: 7bit\n--b--\n")
    check_unchanged(raw, tag(raw), "broken MIME: ")


@pytest.mark.parametrize(("charset", "words"), [
    ("utf-7", "\u65e5\u672c \u00e9 +plus"),
    ("hz", "\u4e2d\u6587"),
    ("johab", "\u30ac \ud55c\uad6d\uc5b4"),
    ("big5", "\u4e2d\u6587"),
    ("gb18030", "\u65e5\u672c \u00e9 \U0001f600"),
    ("euc-kr", "\ud55c\uad6d\uc5b4"),
    ("euc-jp", "\u65e5\u672c\u8a9e"),
    ("koi8-r", "\u041f\u0440\u0438\u0432\u0435\u0442"),
    ("utf-8-sig", "\u00e9\u2603"),
    ("utf-32", "\u00e9\u2603\U0001f600"),
    ("cp1026", "Hello"),
])
def test_other_charsets_are_tagged_without_touching_their_characters(charset: str,
                                                                     words: str) -> None:
    html = page(f"<p title='{words}'>{words}</p>")
    raw = message(leaf("text/html", html.encode(charset), "base64",
                       params=f'; charset="{charset}"'), crlf=True)
    check_tagged(raw, tag(raw), {0})


def test_johab_trail_byte_that_looks_like_a_tag_is_not_taken_for_one() -> None:
    # U+30AC is b"\xde<" in Johab, so its bytes followed by "/body>" read as "</body>".
    html = "<html><body><p>x</p></body>\u30ac/body></html>"
    assert b"</body>" in "\u30ac/body>".encode("johab")
    raw = message(leaf("text/html", html.encode("johab"), "8bit", params="; charset=johab"))
    (tagged,) = check_tagged(raw, tag(raw), {0})
    assert tagged == html.replace("</body>", TAG + "</body>", 1)


def test_utf7_spelled_differently_from_python_goes_out_unchanged() -> None:
    # "+ADw-" is another spelling of "<"; re-encoding would change bytes we do not own.
    data = b"<html><body>+ADw-b+AD4-x</body></html>"
    raw = message(leaf("text/html", data, "7bit", params="; charset=utf-7"))
    check_unchanged(raw, tag(raw), "broken MIME: ")


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entity=mime_entity(), crlf=st.booleans())
def test_empty_tag_only_takes_old_pixels_out(entity: bytes, crlf: bool) -> None:
    raw = message(entity, crlf)
    result = tag_message(raw, "", is_own_pixel)
    if result.pixels_removed == 0:
        assert result.data == raw  # a clean body is left byte for byte, not re-encoded
        return
    before, after = _leaves(_parse(raw)), _leaves(_parse(result.data))
    gone = 0
    for old, new in zip(before, after, strict=True):
        if old.get_content_type() == "text/html":
            gone += _minus_old_pixels(_text(old), _text(new))
        else:
            assert old.get_payload(decode=True) == new.get_payload(decode=True)
    assert gone == result.pixels_removed
    assert _head(result.data) == _head(raw)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entity=mime_entity(), how=st.sampled_from(["signed", "dkim", "nested-signed"]))
def test_random_signed_messages_go_out_unchanged(entity: bytes, how: str) -> None:
    signature = leaf("application/pkcs7-signature", b"sig", "base64")
    if how == "signed":
        raw = message(multipart("signed", [entity, signature]))
    elif how == "nested-signed":
        raw = message(multipart("mixed", [multipart("signed", [entity, signature]),
                                          html_leaf(page())]))
    else:
        raw = message(entity, top="DKIM-Signature: v=1; d=example.com; b=abc\n" + TOP)
    check_unchanged(raw, tag(raw), "signed")
