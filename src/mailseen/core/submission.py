"""Rules for mail a user's client submits (RFC 6409): line endings that cannot be
misread, and whose name a message may be sent in. Pure: bytes and addresses in, a reason
out."""

from __future__ import annotations

from collections.abc import Collection

from .compose import from_addresses

__all__ = ["line_ending_problem", "sender_problem"]

# RFC 5321 2.3.8: lines end in CRLF, and a bare CR or LF must not be read as one. Servers
# that do read them so end DATA early at these sequences: a message carrying one can hide a
# second message behind it ("SMTP smuggling", CVE-2023-51764/51765/51766).
_SMUGGLING = (b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r")


def line_ending_problem(data: bytes) -> str | None:
    """Why ``data`` (a message as DATA carried it, after the transparency dots came out)
    must be refused, or None: every line must end in CRLF."""
    framed = b"\r\n" + data
    if any(seq in framed for seq in _SMUGGLING):
        return ("it contains an end-of-data sequence with a bare CR or LF (<LF>.<LF> or "
                "<CR>.<CR>), which other servers may read as the end of the message")
    lines = data.replace(b"\r\n", b"")
    if b"\n" in lines:
        return "it has a bare LF: every line must end in CR LF"
    if b"\r" in lines:
        return "it has a bare CR: every line must end in CR LF"
    return None


def sender_problem(raw: bytes, allowed: Collection[str]) -> str | None:
    """Why the From field of ``raw`` does not name one of the ``allowed`` addresses (lower
    case), or None. There must be one From field, and every address it names must be
    allowed. Raises InvalidInput when ``raw`` is not a message."""
    fields = from_addresses(raw)
    if not fields:
        return "the message has no From field"
    if len(fields) > 1:
        return "the message has more than one From field"
    if not fields[0]:
        return "the From field names no address"
    foreign = [a for a in fields[0] if a.lower() not in allowed]
    if foreign:
        return f"From: {foreign[0]} is not a mailbox you may send as"
    return None
