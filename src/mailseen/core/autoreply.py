"""Whether an inbound message was written by a machine: out-of-office, vacation, bounces.

An automatic reply is still threaded with the message it answers, labelled "automatic reply",
and never marks anything viewed. The rules are tried in order; the first that answers gives
the reason. Only the header block is parsed, so a large attachment costs nothing.

One conflict in the signals is settled here on purpose. ``Precedence: bulk`` and ``junk`` are
auto-responder conventions, yet mailing lists set ``Precedence: list`` or ``bulk`` on every
message they relay, and a person's reply through a list is not automatic. So ``bulk`` and
``junk`` count only on a message that carries no list header (``List-Id``, ``List-Post``,
``List-Unsubscribe``, ``Mailing-List``: RFC 2369, RFC 2919); ``auto_reply`` always counts. A
machine's reply sent through a list still carries ``Auto-Submitted`` or ``X-Autoreply``, which
the earlier rules catch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr

from mailseen.core.netdata import shipped_text

__all__ = ["RULES", "AutoResult", "Headers", "detect_automatic", "parse_headers"]


@dataclass(frozen=True)
class AutoResult:
    automatic: bool
    reason: str


NOT_AUTOMATIC = AutoResult(False, "not automatic")

Rule = Callable[["Headers"], AutoResult | None]

LIST_HEADERS = ("list-id", "list-post", "list-unsubscribe", "mailing-list")
FALSE_VALUES = frozenset({"", "no", "false", "0", "off"})


class Headers:
    """The header block, looked up by name; values are decoded only when asked for."""

    def __init__(self, message: Message) -> None:
        self._raw: dict[str, str] = {}
        for name, value in message.raw_items():  # raw: 8-bit bytes kept as surrogate escapes
            self._raw.setdefault(name.lower(), value)

    def get(self, name: str) -> str:
        value = self._raw.get(name.lower())
        return "" if value is None else _decode(value).strip()

    def has(self, name: str) -> bool:
        return name.lower() in self._raw


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
    # (auto-replied, auto-generated, auto-notified, ...) a machine's. Parameters may follow ";".
    value = h.get("auto-submitted").split(";")[0].strip().lower()
    if value and value != "no":
        return AutoResult(True, f"Auto-Submitted: {value}")
    return None


def autoreply_headers(h: Headers) -> AutoResult | None:
    # De-facto headers of auto-responders: X-Autoreply (Zendesk, Exim/cPanel vacation),
    # X-Autorespond and X-Autoresponder (vacation scripts, help desks). Set to "yes" or a name.
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if h.has(name) and h.get(name).lower() not in FALSE_VALUES:
            return AutoResult(True, f"{name} header")
    return None


def exchange_out_of_office(h: Headers) -> AutoResult | None:
    # Exchange marks what its inbox rules and out-of-office assistant send with
    # X-MS-Exchange-Inbox-Rules-Loop, and its auto-replies also carry X-Auto-Response-Suppress
    # ([MS-OXCMAIL], X-Auto-Response-Suppress). Outlook puts that header on ordinary mail as
    # well (meeting requests, messages with voting buttons), so that header alone proves
    # nothing.
    if h.has("X-MS-Exchange-Inbox-Rules-Loop") and h.has("X-Auto-Response-Suppress"):
        return AutoResult(True, "Exchange out-of-office")
    return None


def precedence(h: Headers) -> AutoResult | None:
    # Precedence was never standardised (RFC 2076 lists it); auto-responders send
    # "auto_reply", "bulk" or "junk". bulk/junk only without list headers: module docstring.
    value = h.get("precedence").lower()
    if value == "auto_reply":
        return AutoResult(True, "Precedence: auto_reply")
    if value in ("bulk", "junk") and not any(h.has(name) for name in LIST_HEADERS):
        return AutoResult(True, f"Precedence: {value}")
    return None


def empty_return_path(h: Headers) -> AutoResult | None:
    # RFC 5321 §4.5.5 and RFC 3464: delivery status notifications go out with a null reverse
    # path, which the receiving server records as "Return-Path: <>".
    if h.has("Return-Path") and h.get("return-path").replace(" ", "") in ("<>", ""):
        return AutoResult(True, "bounce (empty return path)")
    return None


def mailer_daemon(h: Headers) -> AutoResult | None:
    # Long practice of Sendmail, Postfix and Exim ("Mail Delivery System
    # <Mailer-Daemon@...>"): their bounces come from MAILER-DAEMON.
    local = parseaddr(h.get("from"))[1].split("@")[0].lower()
    if local == "mailer-daemon":
        return AutoResult(True, "bounce (mailer-daemon)")
    return None


def delivery_report(h: Headers) -> AutoResult | None:
    # RFC 6522 multipart/report: report-type=delivery-status is a bounce or delay notice
    # (RFC 3464), disposition-notification a read receipt (RFC 8098); both are machine-made.
    content_type = h.get("content-type").lower()
    if content_type.startswith("multipart/report"):
        match = re.search(r'report-type\s*=\s*"?([\w-]+)', content_type)
        kind = match.group(1) if match else "report"
        return AutoResult(True, f"bounce ({kind} report)" if kind == "delivery-status"
                          else f"automatic report ({kind})")
    return None


def subject_prefix(h: Headers) -> AutoResult | None:
    # autoreply_subjects.txt: the localised subjects Exchange/Outlook, Gmail and common
    # auto-responders put first ("Automatic reply:", "Abwesenheitsnotiz:", "自动回复" with a
    # full-width colon...).
    match = _subject_re().match(h.get("subject"))
    if match:
        return AutoResult(True, f"subject: {match.group(1).strip()}:")
    return None


@functools.cache
def _subject_re() -> re.Pattern[str]:
    prefixes = [line.strip() for line in shipped_text("autoreply_subjects.txt").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    prefixes.sort(key=len, reverse=True)  # "Out of Office AutoReply" before "Out of Office"
    words = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in prefixes)
    return re.compile(rf"\s*({words})\s*[:\uff1a]", re.IGNORECASE)


RULES: tuple[Rule, ...] = (
    auto_submitted,
    autoreply_headers,
    exchange_out_of_office,
    precedence,
    empty_return_path,
    mailer_daemon,
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
