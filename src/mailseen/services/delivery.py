"""The delivery worker: claims queued copies of messages from the database and hands them to
their mailbox's transport. Temporary failures retry with exponential backoff; permanent ones
(and running out of attempts) mark the copy failed with the reason."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import timedelta

from ..clock import Clock, wait
from ..errors import DeliveryError, MailseenError
from ..records import Claim, CopyRecord, Envelope, MailboxRecord, Relay
from ..storage import Store
from ..transports import Transport

__all__ = ["DeliveryWorker"]

log = logging.getLogger(__name__)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


class DeliveryWorker:
    def __init__(self, store: Store, transports: dict[str, Transport], *,
                 render: Callable[[bytes, CopyRecord, MailboxRecord], bytes],
                 retry_base: float = 30.0,
                 retry_max: float = 3600.0, max_attempts: int = 12,
                 lease: timedelta = timedelta(minutes=5), idle_poll: float = 1.0,
                 clock: Clock | None = None) -> None:
        self.store = store
        # How a copy's bytes are made of the stored message (its pixel put in).
        self.render = render
        self.transports = transports
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.lease = lease
        self.idle_poll = idle_poll
        # The store's by default: a retry is due by the time the store compares against.
        self.clock = clock or store.clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Ask the worker to look at the queue now (call from the worker's event loop)."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        return float(min(self.retry_max, self.retry_base * 2 ** max(0, attempts - 1)))

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; the message in hand is always finished first."""
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except MailseenError as exc:  # the database is down: wait and try again
                log.warning("delivery paused: %s", exc)
                busy = False
            if busy:
                continue
            self._wake.clear()
            await wait(self.clock, self.idle_poll, stop, self._wake)

    async def run_once(self) -> bool:
        """Deliver one due copy; return False when none was due."""
        claim = await asyncio.to_thread(self.store.claim_next, self.lease)
        if claim is None:
            return False
        await self._deliver(claim)
        return True

    async def drain(self) -> int:
        """Deliver everything that is due now; for the CLI and tests."""
        count = 0
        while await self.run_once():
            count += 1
        return count

    @staticmethod
    def _reason(text: str) -> str:
        """A server's reply as stored and shown: printable, one line, bounded (a relay
        answering garbage must not break the record of its failure)."""
        return " ".join(_UNPRINTABLE.sub(" ", text).split())[:1000] or "no reply text"

    async def _deliver(self, claim: Claim) -> None:
        msg, copy = claim.message, claim.copy
        name = f"message {msg.id}" + (f" to {copy.recipient}" if copy.recipient else "")
        transport = self.transports.get(claim.mailbox.transport)
        try:
            if transport is None:
                raise DeliveryError(f"unknown transport {claim.mailbox.transport!r}",
                                    permanent=True)
            data = self.render(claim.raw, copy, claim.mailbox)
            note = await transport.deliver(*_handover(claim, data))
        except DeliveryError as exc:
            reason = self._reason(str(exc))
            if exc.permanent or copy.attempts >= self.max_attempts:
                why = reason if exc.permanent else (
                    f"gave up after {copy.attempts} attempts: {reason}")
                log.warning("%s failed: %s", name, why)
                await asyncio.to_thread(self.store.mark_failed, copy.id, why)
            else:
                delay = self.backoff(copy.attempts)
                log.info("%s: %s; retrying in %.0fs", name, reason, delay)
                await asyncio.to_thread(self.store.mark_retry, copy.id, reason,
                                        self.clock.now() + timedelta(seconds=delay))
            return
        log.info("%s sent: %s", name, note)
        await asyncio.to_thread(self.store.mark_sent, copy.id, None)


def _handover(claim: Claim, data: bytes) -> tuple[Envelope, Relay | None]:
    """What the transport gets: the copy's bytes for its envelope recipients (the one
    recipient of a personal copy; those chosen at sending time for a shared one), and the
    mailbox's relay when it has one."""
    msg, copy, box = claim.message, claim.copy, claim.mailbox
    key = f"{msg.created_at.strftime('%Y%m%d-%H%M%S')}-{msg.id}" + (
        f"-{copy.position}" if copy.position else "")
    recipients = (copy.recipient,) if copy.recipient else (copy.envelope or tuple(msg.envelope_to))
    envelope = Envelope(box.address, recipients, data, key)
    if box.transport != "smtp":
        return envelope, None
    return envelope, Relay(box.smtp_host, box.smtp_port, box.smtp_tls, box.smtp_username,
                           claim.smtp_password)
