"""The delivery worker: takes due copies of messages from the database in batches and hands
them to their mailbox's transport, keeping one session per relay open between messages.
Temporary failures retry with exponential backoff; permanent ones (and running out of
attempts) mark the copy failed with the reason. A relay that keeps refusing for now, or
cannot be reached, is left alone for a while: its waiting copies wait with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from ..clock import Clock, wait
from ..errors import DeliveryError, MailseenError
from ..records import Claim, CopyRecord, Envelope, MailboxRecord, Outcome, Relay, Splice
from ..storage import Store
from ..transports import Session, Transport

__all__ = ["DeliveryWorker"]

log = logging.getLogger(__name__)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
# Temporary refusals in a row (4xx replies to different messages) after which a relay is
# taken to be throttling and paused. One alone may be about that message (it is too big
# for now, a scan timed out); one that is the relay's own (unreachable, 421) pauses it.
_REFUSALS_BEFORE_PAUSE = 2
# Lanes of one round (relays times connections each) up to which each keeps a database
# connection for its marks: well within the connection pools (SQLite 5 + 10, PostgreSQL
# 10 + 20), which the web app may share with the worker.
_LANES_KEEPING_CONNECTIONS = 4

# Where a copy goes: its transport, and for a relay its host and port (what a pause is
# for) and how to log in (what a kept connection is for).
RelayKey = tuple[str, str | None, int | None]


class DeliveryWorker:
    def __init__(self, store: Store, transports: dict[str, Transport], *,
                 render: Callable[[bytes, CopyRecord, MailboxRecord, bool, Splice | None],
                                  bytes],
                 retry_base: float = 30.0,
                 retry_max: float = 3600.0, max_attempts: int = 12,
                 lease: timedelta = timedelta(minutes=5), idle_poll: float = 1.0,
                 batch: int = 50, per_relay: int = 1, clock: Clock | None = None) -> None:
        self.store = store
        # How a copy's bytes are made of the stored message (its pixel put in).
        self.render = render
        self.transports = transports
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.lease = lease
        self.idle_poll = idle_poll
        self.batch = max(1, batch)
        self.per_relay = max(1, per_relay)
        # The store's by default: a retry is due by the time the store compares against.
        self.clock = clock or store.clock
        self._wake = asyncio.Event()
        # Sessions not in use, by where they go: kept for the next batch.
        self._idle: dict[tuple[str, Relay | None], list[Session]] = {}
        self._refusals: dict[RelayKey, int] = {}  # temporary refusals in a row, by relay
        self._pauses: dict[RelayKey, int] = {}  # pauses in a row: each one twice as long
        self._paused: dict[RelayKey, datetime] = {}  # relays paused by this worker: until
        # The next batch, being reserved while this one is delivered (see _round).
        self._next: asyncio.Future[list[Claim]] | None = None

    def wake(self) -> None:
        """Ask the worker to look at the queue now (call from the worker's event loop)."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        return float(min(self.retry_max, self.retry_base * 2 ** max(0, attempts - 1)))

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; the message in hand is always finished first, and
        the rest of its batch given back."""
        try:
            while not stop.is_set():
                try:
                    busy = (await self._round(stop, ahead=True))[0] > 0
                except MailseenError as exc:  # the database is down: wait and try again
                    log.warning("delivery paused: %s", exc)
                    busy = False
                if busy:
                    continue
                await self._close_idle()
                self._wake.clear()
                await wait(self.clock, self.idle_poll, stop, self._wake)
        finally:
            await self._give_back()
            await self.close()

    async def run_once(self) -> bool:
        """Deliver one batch of due copies; return False when none was due."""
        return (await self._round(None))[0] > 0

    async def drain(self) -> int:
        """Deliver everything that is due now; for the CLI and tests. Returns the attempts
        made."""
        count = 0
        try:
            while True:
                reserved, tried = await self._round(None)
                count += tried
                if not reserved:
                    return count
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the sessions kept open (QUIT to each relay)."""
        sessions = [s for kept in self._idle.values() for s in kept]
        self._idle.clear()
        await asyncio.gather(*(s.close() for s in sessions))

    async def _close_idle(self) -> None:
        """Close the connections relays would soon cut off themselves."""
        now = self.clock.monotonic()
        await asyncio.gather(*(s.close_if_idle(now) for kept in self._idle.values()
                               for s in kept))

    async def _give_back(self) -> None:
        """Release a batch reserved ahead and not delivered (the worker stops): it is due
        again at once for any worker, rather than when its reservation runs out."""
        ahead, self._next = self._next, None
        if ahead is not None:
            with contextlib.suppress(MailseenError):
                claims = await ahead
                if claims:
                    await asyncio.to_thread(self.store.release, claims)

    async def _round(self, stop: asyncio.Event | None, ahead: bool = False
                     ) -> tuple[int, int]:
        """Reserve a batch and deliver it, one lane per relay (``per_relay`` for a relay
        with many); returns how many were reserved and how many were tried. With
        ``ahead`` (the running worker), a full batch means more is waiting: the next one
        is reserved while this one is delivered, since reserving is round trips to the
        database (on PostgreSQL most of its time) the relay need not wait for."""
        pending = self._next
        # Shielded: a cancelled round leaves the reservation for _give_back to release.
        claims = await (asyncio.shield(pending) if pending is not None
                        else asyncio.to_thread(self.store.reserve, self.batch, self.lease))
        self._next = None
        if not claims:
            return 0, 0
        # A batch reserved ahead was taken while the last round paused relays (and
        # postpone_relay holds back only copies nobody reserved): those pauses hold for it.
        now = self.clock.now()
        self._paused = {key: until for key, until in self._paused.items()
                        if pending is not None and until > now}
        if ahead and len(claims) == self.batch:
            self._next = asyncio.ensure_future(
                asyncio.to_thread(self.store.reserve, self.batch, self.lease))
        groups: dict[RelayKey, list[Claim]] = {}
        for claim in claims:
            groups.setdefault(_relay_key(claim), []).append(claim)
        widths = {key: min(self.per_relay, len(group)) for key, group in groups.items()}
        # A lane keeps a database connection while it works only when there are few of
        # them: a batch for many relays must not take more than the pool holds.
        keep = sum(widths.values()) <= _LANES_KEEPING_CONNECTIONS
        lanes: list[Awaitable[int]] = []
        for key, group in groups.items():
            width = widths[key]
            lanes.extend(self._lane(key, group[i::width], stop, keep) for i in range(width))
        results = await asyncio.gather(*lanes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(claims), sum(r for r in results if isinstance(r, int))

    async def _lane(self, key: RelayKey, claims: Sequence[Claim],
                    stop: asyncio.Event | None, keep: bool = True) -> int:
        """Deliver ``claims`` one after the other over one session. Each is started (an
        attempt) in the transaction that records how the one before ended; that commit
        runs while the session gives the relay the envelope, and the message itself goes
        only once it is done. So a copy is marked sent only after the relay's 250, and a
        worker killed at any moment has at most the copy in hand sent and not recorded."""
        transport = self.transports.get(key[0])
        session = self._take(key[0], _relay(claims[0])) if transport else None
        # One database connection for the lane's marks (else one taken for each).
        lane = self.store.lane() if keep else None
        done: Outcome | None = None
        tried = 0
        try:
            for n, claim in enumerate(claims):
                if claim.reserved_until is not None and claim.reserved_until <= self.clock.now():
                    # Its reservation ran out (a batch reserved ahead behind a slow relay):
                    # it may be another worker's by now, and is due again for any.
                    continue
                paused = self._paused.get(key)
                if paused is not None or (stop is not None and stop.is_set()):
                    await asyncio.to_thread(self.store.advance, done, None, self.lease, lane)
                    done = None
                    await asyncio.to_thread(self.store.release, claims[n:], paused)
                    break
                # The executor's future itself (no task around it): this runs per copy.
                started = asyncio.get_running_loop().run_in_executor(
                    None, self.store.advance, done, claim, self.lease, lane)
                done = None
                try:
                    done = await self._attempt(claim, session, key, started)
                finally:
                    if not started.done():  # never left running, whatever happened
                        await asyncio.wait([started])
                tried += done is not None
            if done is not None:  # and the lane's connection back
                await asyncio.to_thread(self.store.advance, done, None, self.lease, lane)
        finally:
            if lane is not None:
                lane.close()  # when not given back above (nothing when it was)
            if session is not None:
                self._idle.setdefault((key[0], _relay(claims[0])), []).append(session)
        return tried

    def _take(self, transport: str, relay: Relay | None) -> Session:
        kept = self._idle.get((transport, relay))
        return kept.pop() if kept else self.transports[transport].session()

    @staticmethod
    def _reason(text: str) -> str:
        """A server's reply as stored and shown: printable, one line, bounded (a relay
        answering garbage must not break the record of its failure)."""
        return " ".join(_UNPRINTABLE.sub(" ", text).split())[:1000] or "no reply text"

    async def _attempt(self, claim: Claim, session: Session | None, key: RelayKey,
                       started: asyncio.Future[bool]) -> Outcome | None:
        """Try ``claim`` once ``started`` says it is started; None when it was not (withdrawn
        meanwhile): then nothing was handed over."""
        copy = claim.copy
        attempts = copy.attempts + 1  # counted as it was started
        try:
            if session is None:
                raise DeliveryError(f"unknown transport {claim.mailbox.transport!r}",
                                    permanent=True)
            data = self.render(claim.raw, copy, claim.mailbox,
                               claim.message.clicks_tracked, claim.splice)
            note = await session.deliver(*_handover(claim, data), ready=started)
        except DeliveryError as exc:
            if not await started:
                return None
            reason = self._reason(str(exc))
            if not exc.permanent:
                await self._refused(key, exc.relay)
            if exc.permanent or attempts >= self.max_attempts:
                why = reason if exc.permanent else (
                    f"gave up after {attempts} attempts: {reason}")
                log.warning("%s failed: %s", _name(claim), why)
                return Outcome(copy.id, copy.message_id, "failed", why, None, attempts,
                               claim.alone)
            delay = self.backoff(attempts)
            log.info("%s: %s; retrying in %.0fs", _name(claim), reason, delay)
            return Outcome(copy.id, copy.message_id, "queued", reason,
                           self.clock.now() + timedelta(seconds=delay), attempts, claim.alone)
        if note is None:
            return None
        self._refusals.pop(key, None)
        self._pauses.pop(key, None)
        if log.isEnabledFor(logging.INFO):
            log.info("%s sent: %s", _name(claim), note)
        return Outcome(copy.id, copy.message_id, "sent", None, None, attempts, claim.alone)

    async def _refused(self, key: RelayKey, relay_wide: bool) -> None:
        """A temporary failure at ``key``'s relay: pause it when it is the relay's own
        trouble or the relay refused several messages in a row, holding back its waiting
        copies (in the database: every worker sees it) until the pause ends."""
        if key[0] != "smtp" or key in self._paused:
            return
        refusals = self._refusals[key] = self._refusals.get(key, 0) + 1
        if not relay_wide and refusals < _REFUSALS_BEFORE_PAUSE:
            return
        pauses = self._pauses[key] = self._pauses.get(key, 0) + 1
        until = self.clock.now() + timedelta(seconds=self.backoff(pauses))
        self._paused[key] = until
        held = await asyncio.to_thread(self.store.postpone_relay, key[1] or "", key[2], until)
        log.warning("relay %s:%s paused until %s (%d waiting message(s) held back)",
                    key[1], key[2], until.isoformat(timespec="seconds"), held)


def _name(claim: Claim) -> str:
    return f"message {claim.message.id}" + (
        f" to {claim.copy.recipient}" if claim.copy.recipient else "")


def _relay_key(claim: Claim) -> RelayKey:
    box = claim.mailbox
    if box.transport != "smtp":
        return box.transport, None, None
    return box.transport, box.smtp_host, box.smtp_port


def _relay(claim: Claim) -> Relay | None:
    """The mailbox's relay when it has one: where and how to log in."""
    box = claim.mailbox
    if box.transport != "smtp":
        return None
    return Relay(box.smtp_host, box.smtp_port, box.smtp_tls, box.smtp_username,
                 claim.smtp_password)


def _handover(claim: Claim, data: bytes) -> tuple[Envelope, Relay | None]:
    """What the transport gets: the copy's bytes for its envelope recipients (the one
    recipient of a personal copy; those chosen at sending time for a shared one), and the
    mailbox's relay when it has one."""
    msg, copy, box = claim.message, claim.copy, claim.mailbox
    key = f"{msg.created_at.strftime('%Y%m%d-%H%M%S')}-{msg.id}" + (
        f"-{copy.position}" if copy.position else "")
    recipients = (copy.recipient,) if copy.recipient else (copy.envelope or tuple(msg.envelope_to))
    return Envelope(box.address, recipients, data, key), _relay(claim)
