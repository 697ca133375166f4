"""Whether an inbound message was written by a machine: out-of-office, vacation, help-desk
acknowledgements, bounces, read receipts.

An automatic reply is still threaded with the message it answers, labelled "automatic reply",
and never marks anything viewed. The rules are tried in order; the first that answers gives
the reason and the source of the fact it relied on. Only the header block is parsed, so a
large attachment costs nothing. The markers themselves (vendor headers, robot senders,
localised subjects) are data: ``core/replydata.py`` and the files it reads.

A person's reply must never be called automatic, so every rule looks for something only a
machine writes, and signals that people's mail carries too decide nothing:

- ``Precedence: list`` never counts: mailing lists put it on every message they relay.
- List headers (``List-Id``, ``List-Post``, ``List-Unsubscribe``, ... RFC 2369, RFC 2919, and
  the older ones ezmlm-weed knows) never make a message automatic or human by themselves. They
  only silence ``Precedence: bulk`` and ``junk``, which lists (older Majordomo, some Google
  Groups) also put on what they relay. A machine's message sent through a list still carries
  a strong marker (Auto-Submitted, X-Autoreply, Mailman's X-List-Administrivia...), and those
  count whatever the list headers say.
- ``Precedence: bulk`` is also silenced on mail from Request Tracker (``X-RT-Loop-Prevention``):
  RT sends everything, a person's answer typed into a ticket included, with bulk by default.
- ``Precedence: auto_reply`` always counts; nothing but an auto-responder sends it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr

from mailseen.core.replydata import SenderMarker, shipped_reply_data

__all__ = ["RULES", "AutoResult", "Headers", "detect_automatic", "parse_headers"]


@dataclass(frozen=True)
class AutoResult:
    """The verdict: ``reason`` names the marker found ("X-Apple-Action: vacation"),
    ``source`` where the fact that it is a machine's comes from (an RFC, or project, file and
    licence). Two results are equal when verdict and reason are; the source is an explanation.
    """

    automatic: bool
    reason: str
    source: str = field(default="", compare=False)

    @property
    def explained(self) -> str:
        """The reason with its source, for a person to read."""
        return f"{self.reason} ({self.source})" if self.source else self.reason


NOT_AUTOMATIC = AutoResult(False, "not automatic")

Rule = Callable[["Headers"], AutoResult | None]

# RFC 2369 and RFC 2919, plus the older list headers ezmlm-weed (ezmlm-idx, GPL-2.0) knows.
LIST_HEADERS = ("list-id", "list-post", "list-unsubscribe", "list-subscribe", "list-help",
                "list-owner", "list-archive", "mailing-list", "x-mailing-list", "x-ml-name")


class Headers:
    """The header block, looked up by name; values are decoded only when asked for. A field
    that occurs more than once (Delivered-To, Received) keeps every occurrence, in order."""

    def __init__(self, message: Message) -> None:
        self._raw: dict[str, list[str]] = {}
        for name, value in message.raw_items():  # raw: 8-bit bytes kept as surrogate escapes
            self._raw.setdefault(name.lower(), []).append(value)
        self._decoded: dict[str, list[str]] = {}  # several rules read the same fields

    def get(self, name: str) -> str:
        """The first occurrence of the field, decoded; "" when it is absent."""
        values = self.get_all(name)
        return values[0] if values else ""

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        decoded = self._decoded.get(key)
        if decoded is None:
            decoded = [_decode(value).strip() for value in self._raw.get(key, [])]
            self._decoded[key] = decoded
        return decoded

    def has(self, name: str) -> bool:
        return name.lower() in self._raw

    def names(self) -> set[str]:
        """The lower-cased names of the fields present."""
        return set(self._raw)


def _decode(value: str) -> str:
    """A header as text, RFC 2047 encoded words decoded; bad charsets decode leniently."""
    text = _unescape(value)
    if "=?" not in text:
        return " ".join(text.split())
    parts = []
    try:
        for chunk, charset in decode_header(text):
            if isinstance(chunk, bytes):
                try:
                    parts.append(chunk.decode(charset or "ascii", errors="replace"))
                except LookupError:  # an unknown charset name
                    parts.append(chunk.decode("latin-1"))
            else:
                parts.append(chunk)
    except ValueError:  # a garbled encoded word: keep the raw text
        return " ".join(text.split())
    return " ".join("".join(parts).split())


def _unescape(text: str) -> str:
    """Raw 8-bit header bytes (RFC 6532 UTF-8, or a legacy charset) as text: the parser keeps
    them as surrogate escapes; UTF-8 is tried first, Latin-1 never fails."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    raw = text.encode("ascii", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# --- the rules -----------------------------------------------------------------------------

def auto_submitted(h: Headers) -> AutoResult | None:
    # RFC 3834 §5: "Auto-Submitted: no" marks a person's message; any other value
    # (auto-replied, auto-generated, auto-notified (RFC 5436)) a machine's. Parameters and
    # comments may follow: Zimbra sends "auto-replied (zimbra; vacation)" (Zammad's spec).
    value = h.get("auto-submitted").split(";")[0].split("(")[0].strip().lower()
    if value and value != "no":
        return AutoResult(True, f"Auto-Submitted: {value}", "RFC 3834 §5")
    return None


def autoreply_headers(h: Headers) -> AutoResult | None:
    # autoreply_headers.txt: vendor headers of auto-responders and mail robots, each line with
    # its source (multi_mail, FreeScout, RT, Sisimai, ezmlm-weed, Mailman, Zammad, cron...).
    data = shipped_reply_data()
    present = h.names()
    if present.isdisjoint(data.header_names):
        return None
    for marker in data.headers:  # in file order: the first line found names it
        if marker.name in present and any(marker.matches(v) for v in h.get_all(marker.name)):
            return AutoResult(True, marker.reason, marker.source)
    return None


def exchange_out_of_office(h: Headers) -> AutoResult | None:
    # Exchange marks what its out-of-office assistant and inbox rules send with
    # X-MS-Exchange-Inbox-Rules-Loop and "X-Auto-Response-Suppress: All" ([MS-OXCMAIL]
    # 2.1.3.2.20; the pair Zammad's out_of_office_check.rb, AGPL-3.0, looks for). Outlook puts
    # X-Auto-Response-Suppress on ordinary mail as well, so that header alone proves nothing.
    suppress = h.get("x-auto-response-suppress").lower().replace(",", " ").split()
    if h.has("x-ms-exchange-inbox-rules-loop") and "all" in suppress:
        return AutoResult(True, "Exchange out-of-office",
                          "[MS-OXCMAIL]; Zammad out_of_office_check.rb (AGPL-3.0)")
    return None


def precedence(h: Headers) -> AutoResult | None:
    # Precedence was never standardised (RFC 2076 lists it); auto-responders send
    # "auto_reply", "bulk" or "junk" (multi_mail, FreeScout, RT, ezmlm-weed), cPanel also as
    # X-Precedence. bulk/junk not from lists or RT, and "list" never: module docstring.
    found = [(name, value.lower()) for name in ("Precedence", "X-Precedence")
             for value in h.get_all(name)]
    for name, value in found:
        if value == "auto_reply":
            return AutoResult(True, f"{name}: auto_reply", PRECEDENCE_SOURCE)
    for name, value in found:
        if value in ("bulk", "junk") and not _from_a_list(h) and not (
                value == "bulk" and h.has("x-rt-loop-prevention")):
            return AutoResult(True, f"{name}: {value}", PRECEDENCE_SOURCE)
    return None


PRECEDENCE_SOURCE = ("RFC 2076; multi_mail (MIT), FreeScout Mail.php (AGPL-3.0), "
                     "RT CheckForAutoGenerated (GPL-2.0), ezmlm-weed (GPL-2.0)")


def _from_a_list(h: Headers) -> bool:
    return any(h.has(name) for name in LIST_HEADERS)


def empty_return_path(h: Headers) -> AutoResult | None:
    # RFC 5321 §4.5.5 and RFC 3464: delivery status notifications go out with a null reverse
    # path, which the receiving server records as "Return-Path: <>".
    if h.has("Return-Path") and h.get("return-path").replace(" ", "") in ("<>", ""):
        return AutoResult(True, "bounce (empty return path)", "RFC 5321 §4.5.5, RFC 3464")
    return None


def mailer_daemon(h: Headers) -> AutoResult | None:
    # autoreply_senders.txt, kind "bounce": Sendmail, Postfix and Exim send their bounces as
    # MAILER-DAEMON (RT, FreeScout, Discourse); IIS writes it into the Return-Path (multi_mail).
    sender = _robot_sender(h, "bounce")
    if sender is not None:
        return AutoResult(True, f"bounce ({sender.local})", sender.source)
    return None


def list_robot(h: Headers) -> AutoResult | None:
    # autoreply_senders.txt, kind "robot": list servers answer commands from their own
    # addresses (LISTSERV@, MAJORDOMO@; MIT IS&T's auto-responder guidance).
    sender = _robot_sender(h, "robot")
    if sender is not None:
        return AutoResult(True, f"list server ({sender.local})", sender.source)
    return None


def _robot_sender(h: Headers, kind: str) -> SenderMarker | None:
    senders = shipped_reply_data().senders
    for name in ("from", "return-path"):
        value = h.get(name)
        if not any(local in value.lower() for local in senders):
            continue  # parsing the address costs more than this look
        local = parseaddr(value)[1].split("@")[0].lower()
        sender = senders.get(local)
        if sender is not None and sender.kind == kind:
            return sender
    return None


def delivery_report(h: Headers) -> AutoResult | None:
    # RFC 6522 multipart/report: report-type=delivery-status is a bounce or delay notice
    # (RFC 3464), disposition-notification a read receipt (RFC 8098); both are machine-made.
    content_type = h.get("content-type").lower()
    if content_type.startswith("multipart/report"):
        match = re.search(r'report-type\s*=\s*"?([\w-]+)', content_type)
        kind = match.group(1) if match else "report"
        if kind == "delivery-status":
            return AutoResult(True, "bounce (delivery-status report)", "RFC 6522, RFC 3464")
        source = "RFC 6522, RFC 8098" if kind == "disposition-notification" else "RFC 6522"
        return AutoResult(True, f"automatic report ({kind})", source)
    return None


def subject_prefix(h: Headers) -> AutoResult | None:
    # autoreply_subjects.txt: the prefixes out-of-office assistants, help desks and mail
    # systems put first, each block with its source (Discourse, Sisimai, multi_mail,
    # ezmlm-weed, RT, Outlook's localised "Automatic reply:"...).
    data = shipped_reply_data()
    subject = h.get("subject")
    if not data.any_subject.match(subject):
        return None
    for entry in data.subjects:
        if entry.pattern.match(subject):
            return AutoResult(True, f"subject: {entry.prefix}", entry.source)
    return None


RULES: tuple[Rule, ...] = (
    auto_submitted,
    autoreply_headers,
    exchange_out_of_office,
    precedence,
    empty_return_path,
    mailer_daemon,
    list_robot,
    delivery_report,
    subject_prefix,
)


def parse_headers(raw: bytes) -> Headers:
    """The header block of ``raw``; the body is not even decoded."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    head = raw[: min(ends) + 2] if ends else raw
    return Headers(BytesHeaderParser(policy=compat32).parsebytes(head))


def detect_automatic(raw: bytes) -> AutoResult:
    """Whether the message in ``raw`` (RFC 5322 bytes) was sent by a machine, and why."""
    headers = parse_headers(raw)
    for rule in RULES:
        result = rule(headers)
        if result is not None:
            return result
    return NOT_AUTOMATIC
