"""Building messages from fields, and the few header edits made to messages handed over whole.

Header edits work on the raw header block so every other header keeps its exact bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP, compat32
from email.utils import formatdate, getaddresses, make_msgid

from ..errors import InvalidInput, NotAMessage
from .mimetree import eol_of, split_head

__all__ = [
    "Attachment",
    "Draft",
    "HeaderFacts",
    "build_message",
    "parse_address",
    "prepare_raw",
    "read_facts",
]

_FIELD_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:", re.M)
_MAX_MESSAGE = 50 * 1024 * 1024


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


@dataclass(frozen=True)
class HeaderFacts:
    message_id: str
    subject: str
    from_addr: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    in_reply_to: str | None
    references: str | None


def parse_address(value: str, field_name: str) -> str:
    """Return the bare address in ``value`` or raise InvalidInput naming ``field_name``."""
    if "\r" in value or "\n" in value:
        raise InvalidInput(f"{field_name}: line breaks are not allowed", field=field_name)
    pairs = getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1]:
        raise InvalidInput(f"{field_name}: {value!r} is not one email address", field=field_name)
    addr = pairs[0][1]
    local, at, domain = addr.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or " " in addr:
        raise InvalidInput(f"{field_name}: {value!r} is not an email address", field=field_name)
    return addr


def _no_breaks(value: str | None, field_name: str) -> str | None:
    if value is not None and ("\r" in value or "\n" in value):
        raise InvalidInput(f"{field_name}: line breaks are not allowed", field=field_name)
    return value


def build_message(draft: Draft, domain: str) -> bytes:
    """An RFC 5322 message from ``draft``: text and/or HTML as alternatives, attachments
    after them, no Bcc header (Bcc recipients go only into the envelope)."""
    if not draft.to and not draft.cc and not draft.bcc:
        raise InvalidInput("to: at least one recipient is needed", field="to")
    if draft.text is None and draft.html is None:
        raise InvalidInput("text: a text or HTML body is needed", field="text")
    msg = EmailMessage(policy=SMTP)
    sender = parse_address(draft.from_addr, "from")
    name = _no_breaks(draft.from_name, "from_name") or ""
    local, _, host = sender.rpartition("@")
    msg["From"] = Address(display_name=name, username=local, domain=host)
    for header, values in (("To", draft.to), ("Cc", draft.cc)):
        for v in values:
            parse_address(v, header.lower())  # refuses anything but one clean address
        if values:
            msg[header] = ", ".join(values)
    for v in draft.bcc:
        parse_address(v, "bcc")
    msg["Subject"] = _no_breaks(draft.subject, "subject") or ""
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=domain)
    if draft.in_reply_to:
        msg["In-Reply-To"] = _no_breaks(draft.in_reply_to, "in_reply_to") or ""
    if draft.references:
        msg["References"] = _no_breaks(draft.references, "references") or ""
    if draft.text is not None:
        msg.set_content(draft.text)
        if draft.html is not None:
            msg.add_alternative(draft.html, subtype="html")
    else:
        assert draft.html is not None
        msg.set_content(draft.html, subtype="html")
    for att in draft.attachments:
        maintype, _, subtype = att.content_type.partition("/")
        if not maintype or not subtype:
            raise InvalidInput(f"attachments: bad content type {att.content_type!r}",
                               field="attachments")
        _no_breaks(att.filename, "attachments")
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype,
                           filename=att.filename)
    try:
        return msg.as_bytes()
    except (ValueError, TypeError) as exc:  # e.g. a header value the policy refuses
        raise InvalidInput(f"message cannot be built: {exc}") from exc


def _check_is_message(raw: bytes) -> None:
    if not raw.strip():
        raise NotAMessage("input is empty, not a message")
    if len(raw) > _MAX_MESSAGE:
        raise NotAMessage("message larger than 50 MB")
    head_end, _ = split_head(raw)
    head = raw[:head_end]
    if b"\x00" in head or not _FIELD_LINE.match(head):
        raise NotAMessage("input is not an RFC 5322 message (no header fields)")
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
    # The block ends without its last eol (split_head leaves it to the separator).
    if head.endswith(b"\r\n"):
        head = head[:-2]
    elif head.endswith(b"\n"):
        head = head[:-1]
    return head + raw[head_end:]


def read_facts(raw: bytes) -> HeaderFacts:
    """Check ``raw`` is a message and read the facts the store keeps from its headers.
    ``message_id`` is empty when the message has none."""
    _check_is_message(raw)
    head_end, _ = split_head(raw)
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:head_end] + b"\n\n")

    def text(name: str) -> str:
        value = headers.get(name)
        return "" if value is None else " ".join(str(value).split())

    def addrs(name: str) -> list[str]:
        return [a for _, a in getaddresses([str(v) for v in headers.get_all(name, [])]) if a]

    from_pairs = addrs("From")
    return HeaderFacts(
        message_id=text("Message-ID"), subject=_decode(text("Subject")),
        from_addr=from_pairs[0] if from_pairs else "", to=addrs("To"), cc=addrs("Cc"),
        bcc=addrs("Bcc"), in_reply_to=text("In-Reply-To") or None,
        references=text("References") or None,
    )


def prepare_raw(raw: bytes, domain: str) -> tuple[bytes, HeaderFacts]:
    """Check ``raw`` is a message, give it a Message-ID if it has none, take any Bcc header
    out, and return it with the facts the store keeps. Other headers keep their bytes."""
    facts = read_facts(raw)
    if facts.bcc or _has_header(raw, b"Bcc"):
        raw = _remove_header(raw, b"Bcc")
    if not facts.message_id:
        facts = replace(facts, message_id=make_msgid(domain=domain))
        raw = b"Message-ID: " + facts.message_id.encode("ascii") + eol_of(raw) + raw
    return raw, facts


def _has_header(raw: bytes, name: bytes) -> bool:
    head_end, _ = split_head(raw)
    return re.search(rb"(?im)^" + re.escape(name) + rb"[ \t]*:", raw[:head_end]) is not None


def _decode(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        return value
