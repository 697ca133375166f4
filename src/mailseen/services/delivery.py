"""The delivery worker: claims queued messages from the database and hands them to their
mailbox's transport. Temporary failures retry with exponential backoff; permanent ones (and
running out of attempts) mark the message failed with the reason."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

from ..clock import Clock, wait
from ..errors import DeliveryError, MailseenError
from ..records import Claim, Envelope, Relay
from ..storage import Store
from ..transports import Transport

__all__ = ["DeliveryWorker"]

log = logging.getLogger(__name__)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


class DeliveryWorker:
    def __init__(self, store: Store, transports: dict[str, Transport], *,
                 retry_base: float = 30.0, retry_max: float = 3600.0, max_attempts: int = 12,
                 lease: timedelta = timedelta(minutes=5), idle_poll: float = 1.0,
                 clock: Clock | None = None) -> None:
        self.store = store
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
        """Deliver one due message; return False when none was due."""
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
        msg = claim.message
        transport = self.transports.get(claim.mailbox.transport)
        try:
            if transport is None:
                raise DeliveryError(f"unknown transport {claim.mailbox.transport!r}",
                                    permanent=True)
            note = await transport.deliver(*_handover(claim))
        except DeliveryError as exc:
            reason = self._reason(str(exc))
            if exc.permanent or msg.attempts >= self.max_attempts:
                why = reason if exc.permanent else (
                    f"gave up after {msg.attempts} attempts: {reason}")
                log.warning("message %d failed: %s", msg.id, why)
                await asyncio.to_thread(self.store.mark_failed, msg.id, why)
            else:
                delay = self.backoff(msg.attempts)
                log.info("message %d: %s; retrying in %.0fs", msg.id, reason, delay)
                await asyncio.to_thread(self.store.mark_retry, msg.id, reason,
                                        self.clock.now() + timedelta(seconds=delay))
            return
        log.info("message %d sent: %s", msg.id, note)
        await asyncio.to_thread(self.store.mark_sent, msg.id, None)


def _handover(claim: Claim) -> tuple[Envelope, Relay | None]:
    """What the transport gets: the envelope recipients chosen at sending time and the
    stored bytes, and the mailbox's relay when it has one."""
    msg, box = claim.message, claim.mailbox
    key = f"{msg.created_at.strftime('%Y%m%d-%H%M%S')}-{msg.id}"
    envelope = Envelope(box.address, tuple(msg.envelope_to), claim.raw, key)
    if box.transport != "smtp":
        return envelope, None
    return envelope, Relay(box.smtp_host, box.smtp_port, box.smtp_tls, box.smtp_username,
                           claim.smtp_password)
