"""The one send pipeline: every outbound message, composed or handed over whole, goes
through :meth:`Sender.submit`, which decides tracking, tags and queues it."""

from __future__ import annotations

from collections.abc import Callable

from ..core.compose import Draft, build_message, parse_address, prepare_raw
from ..core.inject import tag_message
from ..core.pixel import OwnUrl, own_url, pixel_tag, pixel_url
from ..core.reach import reach_warning
from ..core.tokens import TokenRef, TokenSigner
from ..core.tracking import not_trackable
from ..errors import InvalidInput
from ..records import MailboxRecord, MessageRecord, NewMessage
from ..storage import Store
from ..storage.store import Rendered
from .mailboxes import Mailboxes

__all__ = ["Sender"]


class Sender:
    def __init__(self, store: Store, mailboxes: Mailboxes, signer: TokenSigner, base_url: str,
                 on_queued: Callable[[], None] | None = None) -> None:
        self.store = store
        self.mailboxes = mailboxes
        self.signer = signer
        self.base_url = base_url
        self.on_queued = on_queued

    def own_url(self, url: str) -> OwnUrl | None:
        """Whether fetching ``url`` reaches one of our /t/ or /c/ paths (see
        :func:`mailseen.core.pixel.own_url`)."""
        return own_url(url, self.base_url, self._genuine)

    def is_own_pixel(self, url: str) -> bool:
        """An image URL is ours when fetching it reaches our /t/ (or /c/) paths: anything
        under the public base URL's, and elsewhere (the public URL may have changed since)
        one with a genuine token."""
        return own_url(url, self.base_url, self._genuine) is not None

    def _genuine(self, token: str) -> bool:
        return self.signer.check(token) is not None

    def send_draft(self, mailbox: MailboxRecord, draft: Draft, source: str = "api"
                   ) -> MessageRecord:
        draft.from_addr = draft.from_addr or mailbox.address
        draft.from_name = draft.from_name or mailbox.display_name
        raw = build_message(draft, _domain(mailbox.address))
        # The envelope is the recipients the user chose, never what a parser finds in the
        # message we built: a value that slipped a field past the checks cannot add one.
        chosen = {f: [parse_address(a, f) for a in values]
                  for f, values in (("to", draft.to), ("cc", draft.cc), ("bcc", draft.bcc))}
        envelope = list(dict.fromkeys([*chosen["to"], *chosen["cc"], *chosen["bcc"]]))
        return self.submit(mailbox, raw, bcc=chosen["bcc"], envelope_to=envelope,
                           source=source)

    def submit(self, mailbox: MailboxRecord, raw: bytes, *, bcc: list[str] | None = None,
               envelope_to: list[str] | None = None, source: str = "api", queue: bool = True
               ) -> MessageRecord:
        """Store ``raw`` as a message of ``mailbox``, tracked as the settings say, and queue
        it for delivery (or, with ``queue=False``, record it as sent by other software)."""
        raw, facts = prepare_raw(raw, _domain(mailbox.address))
        all_bcc = list(dict.fromkeys([*facts.bcc, *(bcc or [])]))
        recipients = envelope_to or list(dict.fromkeys([*facts.to, *facts.cc, *all_bcc]))
        if queue and not recipients:
            raise InvalidInput("to: the message has no recipients", field="to")
        decision = self.mailboxes.decision(mailbox)

        def render(message_id: int) -> Rendered:
            if not decision.enabled:
                # Still take out our earlier pixels quoted in a reply, or displaying this
                # message would count as a view of the earlier one.
                cleaned = tag_message(raw, "", self.is_own_pixel)
                data = cleaned.data if cleaned.pixels_removed else raw
                return Rendered(data, False, decision.reason)
            token = self.signer.make(TokenRef(message_id))
            result = tag_message(raw, pixel_tag(pixel_url(self.base_url, token)),
                                 self.is_own_pixel)
            if not result.trackable:
                return Rendered(raw, False, not_trackable(result.reason or "unknown"))
            # Still tracked (tests send to loopback), but the decision says it is in vain.
            warning = reach_warning(self.base_url, recipients)
            return Rendered(result.data, True,
                            f"{decision.reason}; {warning}" if warning else decision.reason)

        new = NewMessage(
            mailbox_id=mailbox.id, message_id=facts.message_id, subject=facts.subject,
            from_addr=facts.from_addr or mailbox.address, to=facts.to, cc=facts.cc, bcc=all_bcc,
            envelope_to=recipients, in_reply_to=facts.in_reply_to, references=facts.references,
            source=source,
        )
        record = self.store.add_message(new, render, queued=queue)
        if queue and self.on_queued is not None:
            self.on_queued()
        return record


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"
