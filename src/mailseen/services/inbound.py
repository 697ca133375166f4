"""The one ingest path: every received message, from IMAP or the SMTP receiver, goes through
:meth:`Ingestor.ingest`.

Ingest never gives up on a message for its shape: MIME too deep or with too many parts to
read (see core/mailbody) is stored as received, and its display says why it is not shown.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import overload

from ..core.autoreply import detect_automatic
from ..core.compose import read_facts
from ..core.htmlscan import scan_html
from ..core.inject import tag_message
from ..core.mailbody import Display, TooComplex, parse_message, walk
from ..records import Ingested, MailboxRecord, NewMessage
from ..storage import Store
from .sending import Sender

__all__ = ["Ingestor", "Renderer"]

log = logging.getLogger(__name__)
# Control characters (NUL included, which PostgreSQL refuses) and the bidi embedding, override
# and isolate controls, which can make a name or subject read as something else
# ("txt.exe" shown as "exe.txt"); the plain direction marks (LRM, RLM) are harmless and stay.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
# Makes a received message ready to show (sanitising is the web layer's, so the process that
# runs ingest hands it in); given our pixel test, it returns what storage keeps.
Renderer = Callable[[bytes, Callable[[str], bool]], Display]


@overload
def _clean(value: str) -> str: ...
@overload
def _clean(value: None) -> None: ...
def _clean(value: str | None) -> str | None:
    """Header text as stored: control and bidi-override characters out, and no longer than
    a header line may be."""
    return None if value is None else _CONTROL.sub("", value)[:998]


def _image_sources(html: str) -> list[str]:
    """Every ``<img src>`` in ``html``, read as the tagger reads them."""
    found: list[str] = []

    def collect(src: str) -> bool:
        found.append(src)
        return False

    scan_html(html, collect)
    return found


class Ingestor:
    def __init__(self, store: Store, sender: Sender,
                 on_ingested: Callable[[Ingested], None] | None = None,
                 render: Renderer | None = None) -> None:
        self.store = store
        self.sender = sender
        self.on_ingested = on_ingested
        # Without one, a message is made ready to show when first shown instead.
        self.render = render

    def quoted_messages(self, raw: bytes) -> list[int]:
        """Ids of our messages whose pixels ``raw`` quotes: a reply (or bounce) whose client
        dropped In-Reply-To/References still threads by them."""
        try:
            msg = parse_message(raw)
        except TooComplex:
            return []
        ids: list[int] = []
        for part in walk(msg):
            if part.get_content_type() != "text/html" or not isinstance(part, EmailMessage):
                continue
            try:
                html = str(part.get_content())
            except (LookupError, ValueError, AssertionError):
                continue
            for src in _image_sources(html):
                own = self.sender.own_url(src)
                ref = self.sender.signer.check(own.token) if own is not None else None
                if ref is not None and ref.message_id not in ids:
                    ids.append(ref.message_id)
        return ids

    def ingest(self, mailbox: MailboxRecord, raw: bytes, source: str,
               envelope_to: list[str] | None = None) -> Ingested:
        """Store ``raw`` as received by ``mailbox``, once, threaded, with our pixels taken out
        (displaying it must never count as a view), judged automatic or not."""
        facts = read_facts(raw)
        hints = self.quoted_messages(raw)
        cleaned = tag_message(raw, "", self.sender.is_own_pixel)
        if cleaned.pixels_removed:
            raw = cleaned.data
        message_id = facts.message_id
        if not message_id or len(message_id) > 900:
            # None (or an absurd one): derive a stable id so a re-poll is still a duplicate.
            message_id = f"<{hashlib.sha256(raw).hexdigest()[:32]}@mailseen.invalid>"
        auto = detect_automatic(raw)
        result = self.store.add_inbound(NewMessage(
            mailbox_id=mailbox.id, message_id=_clean(message_id),
            subject=_clean(facts.subject), from_addr=_clean(facts.from_addr),
            to=[_clean(a) for a in facts.to], cc=[_clean(a) for a in facts.cc], bcc=[],
            envelope_to=list(envelope_to or []), in_reply_to=_clean(facts.in_reply_to),
            references=_clean(facts.references), source=source,
            direction="in", automatic=auto.automatic,
            auto_reason=auto.reason if auto.automatic else "",
        ), raw, hints)
        if not result.duplicate:
            self._prepare_display(result.message.id, raw)
            log.info("received %s for %s via %s%s", message_id, mailbox.address, source,
                     f" (automatic: {auto.reason})" if auto.automatic else "")
            if self.on_ingested is not None:
                self.on_ingested(result)
        return result

    def _prepare_display(self, message_id: int, raw: bytes) -> None:
        if self.render is None:
            return
        try:
            self.store.put_display(message_id, self.render(raw, self.sender.is_own_pixel))
        except Exception:  # the message is stored; it is made ready when first shown instead
            log.exception("cannot prepare message %d for display", message_id)
