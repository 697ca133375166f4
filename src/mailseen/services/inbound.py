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
from ..core.dsn import Report, read_report
from ..core.inject import tag_message
from ..core.mailbody import Display, TooComplex, body_words, parse_message
from ..records import Ingested, MailboxRecord, NewCopy, NewMessage
from ..storage import Store
from .sending import Sender

__all__ = ["SENT_OUTSIDE", "Ingestor", "Renderer"]

# The tracking reason of a message the team sent around mailseen (found in a Sent folder).
SENT_OUTSIDE = "sent outside mailseen"

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
        return self._cleaned(raw)[1]

    def _cleaned(self, raw: bytes) -> tuple[bytes, list[int]]:
        """``raw`` with our pixels taken out (displaying it must never count as a view), and
        the messages those pixels were of. One pass of the tagger finds them: the pixel URL
        shape is known to :meth:`Sender.own_url` alone."""
        found: list[str] = []

        def ours(url: str) -> bool:
            own = self.sender.is_own_pixel(url)
            if own:
                found.append(url)
            return own

        cleaned = tag_message(raw, "", ours)
        refs = [self.sender.signer.check(own.token) for own in
                (self.sender.own_url(url) for url in found) if own is not None]
        keys = [r.copy_key for r in refs if r is not None and r.copy_key]
        of_copies = self.store.messages_of_copies(keys)
        ids: list[int] = []
        for ref in refs:
            mid = (of_copies.get(ref.copy_key) if ref.copy_key else ref.message_id) if ref else None
            if mid and mid not in ids:
                ids.append(mid)
        return (cleaned.data if cleaned.pixels_removed else raw), ids

    def ingest(self, mailbox: MailboxRecord, raw: bytes, source: str,
               envelope_to: list[str] | None = None) -> Ingested:
        """Store ``raw`` as received by ``mailbox``, once, threaded, with our pixels taken out
        (displaying it must never count as a view), judged automatic or not."""
        facts = read_facts(raw)
        raw, hints = self._cleaned(raw)
        message_id = facts.message_id
        if not message_id or len(message_id) > 900:
            # None (or an absurd one): derive a stable id so a re-poll is still a duplicate.
            message_id = f"<{hashlib.sha256(raw).hexdigest()[:32]}@mailseen.invalid>"
        auto = detect_automatic(raw)
        try:  # the one parse the words and a delivery report are read from
            parsed: EmailMessage | None = parse_message(raw)
        except TooComplex:
            parsed = None
        report = read_report(parsed) if parsed is not None and auto.automatic else None
        if report is not None and report.message_id:
            # A bounce threads with the message it returns, which it names only inside.
            returned = self.store.find_outbound(mailbox.id, report.message_id)
            if returned is not None and returned.id not in hints:
                hints.append(returned.id)
        result = self.store.add_inbound(NewMessage(
            mailbox_id=mailbox.id, message_id=_clean(message_id),
            subject=_clean(facts.subject), from_addr=_clean(facts.from_addr),
            to=[_clean(a) for a in facts.to], cc=[_clean(a) for a in facts.cc], bcc=[],
            envelope_to=list(envelope_to or []), in_reply_to=_clean(facts.in_reply_to),
            references=_clean(facts.references), source=source,
            direction="in", automatic=auto.automatic,
            auto_reason=auto.reason if auto.automatic else "",
            words=body_words(parsed) if parsed is not None else "",
        ), raw, hints)
        if not result.duplicate:
            if report is not None:
                self._bounced(mailbox, report, hints)
            self._prepare_display(result.message.id, raw)
            log.info("received %s for %s via %s%s", message_id, mailbox.address, source,
                     f" (automatic: {auto.reason})" if auto.automatic else "")
            if self.on_ingested is not None:
                self.on_ingested(result)
        return result

    def record_sent(self, mailbox: MailboxRecord, raw: bytes, source: str = "imap-sent"
                    ) -> bool:
        """Record ``raw``, found in the mailbox's Sent folder, as sent by the team, not
        tracked ("sent outside mailseen"), in its conversation; False when mailseen has it
        already (it sent it, or read it before). Nothing is queued."""
        facts = read_facts(raw)
        raw, _ = self._cleaned(raw)  # earlier pixels of ours, quoted
        message_id = facts.message_id
        if not message_id or len(message_id) > 900:
            message_id = f"<{hashlib.sha256(raw).hexdigest()[:32]}@mailseen.invalid>"
        message_id = _clean(message_id)
        if self.store.find_outbound(mailbox.id, message_id) is not None:
            return False
        try:
            words = body_words(parse_message(raw))
        except TooComplex:
            words = ""
        recipients = [_clean(a) for a in dict.fromkeys([*facts.to, *facts.cc, *facts.bcc])]
        self.store.add_message(NewMessage(
            mailbox_id=mailbox.id, message_id=message_id, subject=_clean(facts.subject),
            from_addr=_clean(facts.from_addr) or mailbox.address,
            to=[_clean(a) for a in facts.to], cc=[_clean(a) for a in facts.cc],
            bcc=[_clean(a) for a in facts.bcc], envelope_to=recipients,
            in_reply_to=_clean(facts.in_reply_to), references=_clean(facts.references),
            source=source, sent_by="sent outside mailseen", words=words,
        ), raw, [NewCopy(0, None, None)], tracked=False, reason=SENT_OUTSIDE, queued=False)
        log.info("recorded %s, sent by %s outside mailseen", message_id, mailbox.address)
        return True

    def _bounced(self, mailbox: MailboxRecord, report: Report, hints: list[int]) -> None:
        """A delivery report: mark the copies it gave up on as bounced."""
        if not report.bounces:
            return
        by = f" (reported by {report.reporter})" if report.reporter else ""
        changed = self.store.mark_bounced(
            mailbox.id, report.message_id, hints,
            [(b.recipient, f"{b.reason}{by}") for b in report.bounces])
        if changed:
            log.info("bounce for message(s) %s of %s", changed, mailbox.address)

    def _prepare_display(self, message_id: int, raw: bytes) -> None:
        if self.render is None:
            return
        try:
            self.store.put_display(message_id, self.render(raw, self.sender.is_own_pixel))
        except Exception:  # the message is stored; it is made ready when first shown instead
            log.exception("cannot prepare message %d for display", message_id)
