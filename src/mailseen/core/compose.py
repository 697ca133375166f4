"""Building messages from fields, and the few header edits made to messages handed over whole.

Header edits work on the raw header block so every other header keeps its exact bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from email.errors import MessageError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, getaddresses, make_msgid

from ..errors import InvalidInput, NotAMessage
from ..records import HeaderFacts
from .mimetree import eol_of, split_head

__all__ = [
    "Attachment",
    "Draft",
    "build_message",
    "from_addresses",
    "parse_address",
    "prepare_raw",
    "read_facts",
    "reply_threading",
]

# A header field's name: RFC 5322 allows any printable ASCII but ":", yet real names are
# tokens (letters, digits, "-" and a few more); the stricter form tells JSON, HTML and
# other text that merely contains a colon from a message.
_FIELD_LINE = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9!#$%&'*+.^_`|~-]*[ \t]*:", re.M)
_MAX_MESSAGE = 50 * 1024 * 1024
# CR and LF start a new header line; the rest are controls that some software also takes for
# line breaks (Python's own str.splitlines does for VT, FF, FS, GS, RS, NEL, LS and PS).
_UNSAFE_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# An RFC 2047 encoded word, as loosely as the email package finds one: it decodes "=?…?=" even
# inside a word, so "=?UTF-8?Q?=0ABcc:_x@y?=" set as text comes out as a line break and a
# Bcc field. Our values are text, never pre-encoded, so any such run is refused.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.S)
# A message id as In-Reply-To and References carry it: "<…>" of printable ASCII without
# spaces (RFC 5322 3.6.4 msg-id, and the obsolete forms nobody writes any more left out).
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
# The fields build_message writes; anything else in its output came from a value.
_BUILT_FIELDS = frozenset({"from", "to", "cc", "subject", "date", "message-id", "in-reply-to",
                           "references", "mime-version", "content-type",
                           "content-transfer-encoding"})
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Draft:
    from_addr: str
    from_name: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    in_reply_to: str | None = None
    references: str | None = None


def parse_address(value: str, field_name: str) -> str:
    """Return the bare address in ``value`` or raise InvalidInput naming ``field_name``."""
    _header_text(value, field_name)
    pairs = getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1]:
        raise InvalidInput(f"{field_name}: {value!r} is not one email address", field=field_name)
    addr = pairs[0][1]
    local, at, domain = addr.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or " " in addr:
        raise InvalidInput(f"{field_name}: {value!r} is not an email address", field=field_name)
    return addr


def _no_breaks(value: str | None, field_name: str) -> str | None:
    if value is not None and _UNSAFE_IN_HEADER.search(value):
        raise InvalidInput(f"{field_name}: line breaks and control characters are not allowed",
                           field=field_name)
    return value


def _header_text(value: str, field_name: str) -> str:
    """``value`` as it may go into a header: one line, and no RFC 2047 encoded word, which
    the email package would decode (into line breaks, say) after any check of the text."""
    _no_breaks(value, field_name)
    found = _ENCODED_WORD.search(value)
    if found:
        raise InvalidInput(f"{field_name}: {found.group()[:60]!r} is RFC 2047 encoding, which "
                           "mail programs decode rather than show; write the text itself",
                           field=field_name)
    return value


def _message_ids(value: str | None, field_name: str) -> str | None:
    """A References or In-Reply-To value: message ids ("<…>") separated by spaces."""
    if value is None or not value.strip():
        return None
    _header_text(value, field_name)
    ids = value.split()
    for one in ids:
        if not _MSG_ID.fullmatch(one):
            raise InvalidInput(f"{field_name}: {one[:60]!r} is not a message id "
                               "(<…> without spaces)", field=field_name)
    return " ".join(ids)


def reply_threading(message_id: str, references: str | None) -> tuple[str | None, str | None]:
    """(In-Reply-To, References) for a reply to a message with ``message_id`` and
    ``references`` as received: only well-formed ids are kept (the last 20 references), so a
    sender's malformed or hostile ids never reach our message (or refuse the reply)."""

    def usable(one: str) -> bool:
        return bool(_MSG_ID.fullmatch(one)) and not _ENCODED_WORD.search(one)

    parent = message_id if usable(message_id) else None
    refs = [r for r in (references or "").split() if usable(r)][-20:]
    chain = list(dict.fromkeys([*refs, *([parent] if parent else [])]))
    return parent, " ".join(chain) or None


def _set_header(msg: EmailMessage, name: str, value: object, field_name: str) -> None:
    try:
        msg[name] = value
    except (ValueError, TypeError, IndexError) as exc:  # what the policy refuses
        raise InvalidInput(f"{field_name}: {exc}", field=field_name) from exc
    # What counts is the value as the email package holds it, decoded: that is what it
    # writes out.
    _no_breaks(str(msg[name]), field_name)


def _check_built(data: bytes) -> None:
    """The message holds only the fields build_message wrote, each once: the last guard
    against a value turning into a field of its own."""
    head_end, _ = split_head(data)
    names = [name for name, _ in _fields(data[:head_end])]
    extra = sorted({n for n in names if n not in _BUILT_FIELDS}
                   | {n for n in names if names.count(n) > 1})
    if extra:
        raise InvalidInput(f"message cannot be built: a value would add or repeat the "
                           f"header {extra[0]!r}")


def build_message(draft: Draft, domain: str) -> bytes:
    """An RFC 5322 message from ``draft``: text and/or HTML as alternatives, attachments
    after them, no Bcc header (Bcc recipients go only into the envelope)."""
    if not draft.to and not draft.cc and not draft.bcc:
        raise InvalidInput("to: at least one recipient is needed", field="to")
    if draft.text is None and draft.html is None:
        raise InvalidInput("text: a text or HTML body is needed", field="text")
    msg = EmailMessage(policy=SMTP)
    sender = parse_address(draft.from_addr, "from")
    name = _header_text(draft.from_name, "from_name")
    local, _, host = sender.rpartition("@")
    try:
        from_value = Address(display_name=name, username=local, domain=host)
    except (ValueError, TypeError, IndexError) as exc:
        raise InvalidInput(f"from: {exc}", field="from") from exc
    _set_header(msg, "From", from_value, "from")
    for header, values in (("To", draft.to), ("Cc", draft.cc)):
        for v in values:
            parse_address(v, header.lower())  # refuses anything but one clean address
        if values:
            _set_header(msg, header, ", ".join(values), header.lower())
    for v in draft.bcc:
        parse_address(v, "bcc")
    _set_header(msg, "Subject", _header_text(draft.subject, "subject"), "subject")
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=domain)
    in_reply_to = _message_ids(draft.in_reply_to, "in_reply_to")
    if in_reply_to:
        _set_header(msg, "In-Reply-To", in_reply_to, "in_reply_to")
    references = _message_ids(draft.references, "references")
    if references:
        _set_header(msg, "References", references, "references")
    if draft.text is not None:
        msg.set_content(draft.text)
        if draft.html is not None:
            msg.add_alternative(draft.html, subtype="html")
    else:
        assert draft.html is not None
        msg.set_content(draft.html, subtype="html")
    for att in draft.attachments:
        _add_attachment(msg, att)
    try:
        data = msg.as_bytes()
    except (ValueError, TypeError) as exc:  # e.g. a header value the policy refuses
        raise InvalidInput(f"message cannot be built: {exc}") from exc
    _check_built(data)
    return data


def _add_attachment(msg: EmailMessage, att: Attachment) -> None:
    if not _MIME_TYPE.fullmatch(att.content_type):
        raise InvalidInput(f"attachments: bad content type {att.content_type!r}",
                           field="attachments")
    _header_text(att.filename, "attachments")
    maintype, _, subtype = att.content_type.lower().partition("/")
    if maintype == "multipart":
        # A multipart needs a boundary and parts, not opaque bytes; sent as-is it would
        # break the structure of the whole message.
        raise InvalidInput(f"attachments: {att.content_type} cannot be attached as a file",
                           field="attachments")
    if maintype == "message":
        # RFC 2046 5.2.1: an attached message may not be base64-encoded, so it goes as
        # 8bit, which needs short lines and no NULs.
        if b"\0" in att.data or any(len(line.rstrip(b"\r")) > 998
                                    for line in att.data.split(b"\n")):
            raise InvalidInput(f"attachments: {att.filename!r} is not a message that can be "
                               "attached as is (NUL or line over 998 octets); attach it as "
                               "application/octet-stream", field="attachments")
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype,
                           filename=att.filename, cte="8bit")
        return
    msg.add_attachment(att.data, maintype=maintype, subtype=subtype, filename=att.filename)


def _check_is_message(raw: bytes) -> None:
    if not raw.strip():
        raise NotAMessage("input is empty, not a message")
    if len(raw) > _MAX_MESSAGE:
        raise NotAMessage("message larger than 50 MB")
    head_end, _ = split_head(raw)
    head = raw[:head_end]
    if not _FIELD_LINE.match(head):
        raise NotAMessage("input is not an RFC 5322 message (no header fields)")
    if b"\x00" in head:
        raise NotAMessage("input is not a message that can be stored (a NUL byte in the "
                          "header)")
    for line in head.splitlines():
        if line and not line[:1].isspace() and not _FIELD_LINE.match(line):
            raise NotAMessage("input is not an RFC 5322 message (bad header line)")


def _remove_header(raw: bytes, name: bytes) -> bytes:
    """Drop every ``name:`` field (with its folded lines) from the top-level header block."""
    head_end, _ = split_head(raw)
    lines = raw[:head_end].splitlines(keepends=True)
    out: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() == name.lower()
        if not skipping:
            out.append(line)
    head = b"".join(out)
    if not head:
        # Nothing left above the blank line: drop the line ending that closed the last
        # field too, or the message would start with two blank lines.
        rest = raw[head_end:]
        return rest[2:] if rest.startswith(b"\r\n") else rest[1:]
    # The block ends without its last eol (split_head leaves it to the separator).
    if head.endswith(b"\r\n"):
        head = head[:-2]
    elif head.endswith(b"\n"):
        head = head[:-1]
    return head + raw[head_end:]


def take_header(raw: bytes, name: str) -> tuple[bytes, str | None]:
    """The message without its top-level ``name`` fields, and the (unfolded, stripped)
    value of the first of them, or None: for instructions a client gives mailseen in a
    field of its own, which the recipients must not see."""
    head_end, _ = split_head(raw)
    values = [v for n, v in _fields(raw[:head_end]) if n == name.lower()]
    if not values:
        return raw, None
    return _remove_header(raw, name.encode()), " ".join(values[0].split())


def _fields(head: bytes) -> list[tuple[str, str]]:
    """(lowercased name, unfolded value) of each field in a header block. Parsed here rather
    than with the email package, which stops at an obsolete "Name :" field and so would miss
    the fields after it, and shows 8-bit bytes as U+FFFD."""
    out: list[tuple[str, str]] = []
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t"):
            if out:
                out[-1] = (out[-1][0], out[-1][1] + _unicode(line))
            continue
        name, colon, value = line.partition(b":")
        if colon:
            out.append((name.strip().decode("ascii", "replace").lower(), _unicode(value)))
    return out


def _unicode(value: bytes) -> str:
    """Header bytes as text: 8-bit bytes are read as UTF-8 (RFC 6532), and anything not
    UTF-8 becomes U+FFFD, so nothing unencodable reaches the store."""
    return value.decode("utf-8", "replace")


_ANGLE_ADDR = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


def _sender(values: list[str]) -> str:
    """The address a From field really names. ``ceo@bank.example <attacker@evil.example>``
    (an unquoted display name that looks like an address) is read by the email package as
    two addresses, the first a forgery: the one in angle brackets is the sender's."""
    if not values:
        return ""
    angle: list[str] = _ANGLE_ADDR.findall(values[0])
    if len(angle) == 1:
        return angle[0]
    pairs = [a for _, a in getaddresses(values[:1]) if a]
    return pairs[0] if pairs else ""


def read_facts(raw: bytes) -> HeaderFacts:
    """Check ``raw`` is a message and read the facts the store keeps from its headers.
    ``message_id`` is empty when the message has none."""
    _check_is_message(raw)
    head_end, _ = split_head(raw)
    fields = _fields(raw[:head_end])

    def values(name: str) -> list[str]:
        return [v for k, v in fields if k == name.lower()]

    def text(name: str) -> str:
        found = values(name)
        return " ".join(found[0].split()) if found else ""

    def addrs(name: str) -> list[str]:
        return [a for _, a in getaddresses(values(name)) if a]

    return HeaderFacts(
        message_id=text("Message-ID"), subject=_decode(text("Subject")),
        from_addr=_sender(values("From")), to=addrs("To"), cc=addrs("Cc"),
        bcc=addrs("Bcc"), in_reply_to=text("In-Reply-To") or None,
        references=text("References") or None,
    )


def from_addresses(raw: bytes) -> list[list[str]]:
    """Every address each From field of ``raw`` names, one list per field: both the ones
    the email package reads and any in angle brackets (see :func:`_sender`), so that a
    check over them all cannot be passed by a display name that looks like an address."""
    _check_is_message(raw)
    head_end, _ = split_head(raw)
    out = []
    for name, value in _fields(raw[:head_end]):
        if name == "from":
            found = [a for _, a in getaddresses([value]) if a]
            out.append(list(dict.fromkeys([*found, *_ANGLE_ADDR.findall(value)])))
    return out


def prepare_raw(raw: bytes, domain: str) -> tuple[bytes, HeaderFacts]:
    """Check ``raw`` is a message, give it a Message-ID if it has none, take any Bcc header
    out, and return it with the facts the store keeps. Other headers keep their bytes."""
    facts = read_facts(raw)
    if _has_header(raw, b"Bcc"):
        raw = _remove_header(raw, b"Bcc")
    if not facts.message_id:
        if _has_header(raw, b"Message-ID"):
            # An empty one counts as missing; leaving it would make two.
            raw = _remove_header(raw, b"Message-ID")
        facts = replace(facts, message_id=make_msgid(domain=domain))
        raw = b"Message-ID: " + facts.message_id.encode("ascii") + eol_of(raw) + raw
    return raw, facts


def _has_header(raw: bytes, name: bytes) -> bool:
    head_end, _ = split_head(raw)
    return any(k == name.decode().lower() for k, _ in _fields(raw[:head_end]))


def _decode(value: str) -> str:
    """Decode RFC 2047 encoded words; text that has none (or is raw UTF-8) stays as it is."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, MessageError):  # e.g. a bogus charset name
        return value
