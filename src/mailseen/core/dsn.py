"""Delivery status notifications (RFC 3464 inside an RFC 6522 multipart/report): which
recipients of which message a mail server gave up on, and why.

A bounce names the message it returns by the Message-ID in its returned headers
(``text/rfc822-headers`` or ``message/rfc822``), and each recipient by a
``Final-Recipient`` (or ``Original-Recipient``) field with its ``Action``, ``Status`` and
``Diagnostic-Code``. Only ``Action: failed`` is a bounce; ``delayed``, ``delivered``,
``relayed`` and ``expanded`` are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import default

__all__ = ["Bounce", "Report", "read_report"]

_MSGID = re.compile(r"<[^<>\s]+>")
_ADDRESS = re.compile(r"^\s*(?:rfc822\s*;)?\s*<?([^<>\s;]+@[^<>\s;]+?)>?\s*$", re.I)


@dataclass(frozen=True)
class Bounce:
    """One recipient the reporting server gave up on."""

    recipient: str
    status: str  # the enhanced status code, "5.1.1"
    reason: str  # the server's words: the Diagnostic-Code, else the status


@dataclass(frozen=True)
class Report:
    """What a delivery status notification says."""

    message_id: str | None  # the returned message's Message-ID, with its brackets
    bounces: list[Bounce]
    reporter: str  # the Reporting-MTA, for the record


def _address(value: str | None) -> str | None:
    if not value:
        return None
    match = _ADDRESS.match(" ".join(value.split()))
    return match.group(1).lower() if match else None


def _fields(part: Message) -> list[Message]:
    """The field groups of a message/delivery-status part: the per-message group, then one
    per recipient."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package splits the groups itself
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    groups = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [HeaderParser().parsestr(g + "\n") for g in groups if g.strip()]


def _returned_id(part: Message) -> str | None:
    head: object
    if part.get_content_type() == "text/rfc822-headers":
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        head = BytesHeaderParser(policy=default).parsebytes(payload)
    else:  # message/rfc822
        inner = part.get_payload()
        head = inner[0] if isinstance(inner, list) and inner else None
    if not isinstance(head, Message):
        return None
    found = _MSGID.search(str(head.get("Message-ID", "")))
    return found.group(0) if found else None


def read_report(msg: EmailMessage) -> Report | None:
    """The delivery status notification in ``msg``, or None when it is not one."""
    report_type = msg.get_param("report-type", "")
    if msg.get_content_type() != "multipart/report" or not isinstance(report_type, str) or (
            report_type.lower() != "delivery-status"):
        return None
    message_id: str | None = None
    bounces: list[Bounce] = []
    reporter = ""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("message/delivery-status", "message/global-delivery-status"):
            groups = _fields(part)
            if groups:
                reporter = " ".join(str(groups[0].get("Reporting-MTA", "")).split())
            for group in groups[1:] or groups:
                action = str(group.get("Action", "")).strip().lower()
                recipient = (_address(group.get("Final-Recipient"))
                             or _address(group.get("Original-Recipient")))
                if action != "failed" or recipient is None:
                    continue
                status = " ".join(str(group.get("Status", "")).split())[:20]
                diagnostic = str(group.get("Diagnostic-Code", ""))
                reason = " ".join(diagnostic.partition(";")[2].split()) or status
                bounces.append(Bounce(recipient, status, reason[:500]))
        elif kind in ("text/rfc822-headers", "message/rfc822") and message_id is None:
            message_id = _returned_id(part)
    return Report(message_id, bounces, reporter[:200])
