"""What a stored message shows: its body, inline images and attachments, read with bounds.

The standard library's parser recurses once per nesting level and builds a full message
object per part: a mail of 1,000 nested multiparts raises RecursionError, one of 50,000 parts
takes minutes. :func:`parse_message` stops at :data:`MAX_PARTS` parts or :data:`MAX_NESTING`
levels instead (:class:`TooComplex`), so reading any message costs a bounded amount of work
and a message beyond the bounds is stored and shown with a note rather than lost.
"""

from __future__ import annotations

import base64
import email.policy
import html
import re
from dataclasses import dataclass, field
from email.feedparser import BytesFeedParser
from email.message import EmailMessage, Message
from email.policy import Policy

__all__ = [
    "MAX_NESTING",
    "MAX_PARTS",
    "WORDS_MAX",
    "Body",
    "Display",
    "MailAttachment",
    "TooComplex",
    "attachment_data",
    "body_words",
    "parse_message",
    "read_body",
    "walk",
]

# Far beyond real mail (a forwarded message with attachments nests about 6 deep, a mail with
# 500 attachments is absurd); reading that many parts takes about a second, and the parser's
# recursion at MAX_NESTING stays shallow.
MAX_PARTS = 500
MAX_NESTING = 40
TOO_COMPLEX_MIME = (f"This message has more than {MAX_PARTS:,} parts or is nested more than "
                    f"{MAX_NESTING} levels deep: it is too complex to display safely; download it "
                    "to read it.")

_INLINE_TYPES = frozenset({"image/png", "image/gif", "image/jpeg", "image/webp"})
_INLINE_MAX = 5 * 1024 * 1024


class TooComplex(ValueError):
    """The message has more parts, or nests deeper, than it may be read with."""


class _BoundedParser(BytesFeedParser):
    def __init__(self, policy: Policy) -> None:
        super().__init__(policy=policy)
        self.parts = 0

    # The feed parser calls this for every part it starts, the top one included, with the
    # parts it is inside on _msgstack.
    def _new_message(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise TooComplex(f"more than {MAX_PARTS} MIME parts")
        if len(self._msgstack) >= MAX_NESTING:  # type: ignore[attr-defined]
            raise TooComplex(f"MIME parts nested more than {MAX_NESTING} deep")
        super()._new_message()  # type: ignore[misc]


def parse_message(raw: bytes) -> EmailMessage:
    """``raw`` parsed as ``email.message_from_bytes`` (default policy) would, within the
    bounds. Raises :class:`TooComplex`."""
    if raw.count(b"\n--") > MAX_PARTS:
        # Enough delimiter-like lines for too many parts. The default policy parses each
        # Content-Type five times over, about a millisecond a part: find out with the plain
        # one first, ten times faster. (Where the two differ, the default policy decodes
        # encoded words, the parse below still has the bounds.)
        _parse(raw, email.policy.compat32)
    msg = _parse(raw, email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _parse(raw: bytes, policy: Policy) -> Message:
    parser = _BoundedParser(policy)
    try:
        parser.feed(raw)
        return parser.close()
    except RecursionError as exc:  # a bound the counts above missed: still refuse, never crash
        raise TooComplex("MIME structure too deep to read") from exc


def walk(msg: Message) -> list[Message]:
    """Every part of ``msg``, depth first, without recursion."""
    out: list[Message] = []
    todo = [msg]
    while todo:
        part = todo.pop()
        out.append(part)
        if part.is_multipart():
            todo.extend(reversed([p for p in part.get_payload() if isinstance(p, Message)]))
    return out


@dataclass(frozen=True)
class MailAttachment:
    index: int
    filename: str
    content_type: str
    size: int


@dataclass
class Body:
    """What a message shows: its HTML (unsanitised) and its text (the plain alternative of
    an HTML body, if any), and ``note`` when not all of it could be read."""

    html: str | None = None
    text: str | None = None
    inline: dict[str, str] = field(default_factory=dict)  # Content-ID -> data: URL
    attachments: list[MailAttachment] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Display:
    """A message made ready to show, once: the sanitised HTML without remote images, the
    same with them (None when there are none), or the text; ``note`` says what the reader
    is not shown and why. ``version`` names the rules that made it (older ones are redone)."""

    version: int
    html: str | None
    html_images: str | None
    text: str | None
    blocked_images: int
    attachments: list[MailAttachment]
    note: str = ""


def _content(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _leaves(msg: Message) -> list[Message]:
    """Every non-multipart part, not looking inside attached messages."""
    out: list[Message] = []
    todo = [msg]
    while todo:
        part = todo.pop()
        if part.is_multipart() and part.get_content_type() != "message/rfc822":
            todo.extend(reversed([p for p in part.get_payload() if isinstance(p, Message)]))
        else:
            out.append(part)
    return out


# How much of a body's words search keeps (a reply's first screens are what people search for).
WORDS_MAX = 20_000
# Markup, dropped for search. "<" is excluded inside so that text full of "<" without ">"
# is still scanned in linear time.
_MARKUP = re.compile(r"<[^<>]*>")


def body_words(msg: EmailMessage) -> str:
    """The words of a parsed message's body, for search: its plain text version, else its
    HTML without markup; whitespace collapsed, bounded by WORDS_MAX."""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except (LookupError, ValueError, AssertionError):
        return ""
    if part is None:
        return ""
    content = _content(part)[: WORDS_MAX * 4]
    if part.get_content_type() == "text/html":
        content = html.unescape(_MARKUP.sub(" ", content))
    return " ".join(content.split())[:WORDS_MAX]


def read_body(raw: bytes) -> Body:
    try:
        msg = parse_message(raw)
    except TooComplex:
        return Body(note=TOO_COMPLEX_MIME)
    try:
        part = msg.get_body(preferencelist=("html", "plain"))
        alt = msg.get_body(preferencelist=("plain",))  # the text version of an HTML body
    except (LookupError, ValueError, AssertionError):  # structure the parser gave up on
        part = alt = None
    body = Body()
    if part is not None:
        if part.get_content_type() == "text/html":
            body.html = _content(part)
            if alt is not None:
                body.text = _content(alt)
        else:
            body.text = _content(part)
    used = 0
    for n, leaf in enumerate(_leaves(msg)):
        if leaf is part or leaf is alt:
            continue
        ctype = leaf.get_content_type()
        cid = str(leaf.get("Content-ID", "")).strip().strip("<>")
        filename = leaf.get_filename()
        disposition = leaf.get_content_disposition()
        data = leaf.get_payload(decode=True)
        size = len(data) if isinstance(data, bytes) else 0
        if (cid and ctype in _INLINE_TYPES and body.html and f"cid:{cid}" in body.html
                and isinstance(data, bytes) and used + size <= _INLINE_MAX):
            used += size
            body.inline[cid] = f"data:{ctype};base64,{base64.b64encode(data).decode('ascii')}"
            continue
        if filename or disposition == "attachment" or not ctype.startswith("text/"):
            body.attachments.append(MailAttachment(n, filename or f"part-{n}", ctype, size))
    return body


def attachment_data(raw: bytes, index: int) -> tuple[MailAttachment, bytes] | None:
    """The ``index``-th part (numbered as in :attr:`Body.attachments`) and its bytes."""
    try:
        leaves = _leaves(parse_message(raw))
    except TooComplex:
        return None
    if not 0 <= index < len(leaves):
        return None
    leaf = leaves[index]
    data = leaf.get_payload(decode=True)
    if not isinstance(data, bytes):
        return None
    name = leaf.get_filename() or f"part-{index}"
    return MailAttachment(index, name, leaf.get_content_type(), len(data)), data
