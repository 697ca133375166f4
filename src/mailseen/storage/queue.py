"""The delivery queue, kept in the messages table."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import CursorResult

from ..records import Claim
from .base import StoreBase, mailbox_record, message_record
from .models import Mailbox, Message, MessageData

# When every due message is locked by other workers' claims: how often to look again, and
# how long to pause before each look (at most a quarter of a second in all).
_LOCKED_TRIES = 50
_LOCKED_PAUSE = 0.005

# The statuses of messages still in the queue or needing attention (not "sent"), and the
# query that counts them: a range of an index that starts with the status.
PENDING = ("queued", "sending", "failed")
PENDING_COUNTS = (select(Message.status, func.count()).where(Message.status.in_(PENDING))
                  .group_by(Message.status))


class QueueStore(StoreBase):
    def claim_next(self, lease: timedelta) -> Claim | None:
        """Claim one due message for delivery, or None. Safe with many workers: the claim
        is a conditional UPDATE whose row count says who won. A claim whose worker died is
        taken over once its lease has run out. None means nothing is due, or all that is due
        has been locked by other sessions for a quarter of a second: a claim that loses a race
        tries the next message (every lost race is another worker's win, so this ends), and
        one that finds every due message being claimed waits for those claims, rather than
        tell a worker the queue is empty while it is not."""
        t = self.clock.now()
        waited = 0
        due = or_(
            (Message.status == "queued") & (Message.next_attempt_at <= t),
            (Message.status == "sending") & (Message.lease_until < t),
        )
        while True:
            if waited:
                time.sleep(_LOCKED_PAUSE)  # outside any transaction
            with self._tx() as s:
                # On PostgreSQL, rows another worker is claiming right now are skipped rather
                # than waited for and then lost (SQLite has one writer and ignores this).
                candidate = s.scalar(select(Message.id).where(due)
                                     .order_by(Message.next_attempt_at, Message.id).limit(1)
                                     .with_for_update(skip_locked=True))
                if candidate is None:
                    if s.scalar(select(Message.id).where(due).limit(1)) is None:
                        return None  # nothing is due
                    # Every due message is locked: other workers' claims, done in
                    # milliseconds. Wait for them a little; a lock held far longer (a stalled
                    # session) is not worth spinning on: the worker polls again later.
                    waited += 1
                    if waited > _LOCKED_TRIES:
                        return None
                    continue
                result = s.execute(
                    update(Message).where(Message.id == candidate, due).values(
                        status="sending", lease_until=t + lease, attempts=Message.attempts + 1))
                if not cast(CursorResult[Any], result).rowcount:
                    continue  # another worker won this one
                row = s.get(Message, candidate)
                assert row is not None
                s.refresh(row)
                box = s.get(Mailbox, row.mailbox_id)
                data = s.get(MessageData, row.id)
                assert box is not None and data is not None
                password = (self.cipher.decrypt(box.smtp_password_enc)
                            if box.smtp_password_enc else None)
                return Claim(message_record(row), data.raw, mailbox_record(box), password)

    def mark_sent(self, message_id: int, note: str | None = None) -> None:
        with self._tx() as s:
            s.execute(update(Message).where(Message.id == message_id).values(
                status="sent", sent_at=self.clock.now(), lease_until=None,
                next_attempt_at=None, last_error=note))

    def mark_retry(self, message_id: int, error: str, at: datetime) -> None:
        with self._tx() as s:
            s.execute(update(Message).where(Message.id == message_id).values(
                status="queued", next_attempt_at=at, lease_until=None, last_error=error))

    def mark_failed(self, message_id: int, error: str) -> None:
        with self._tx() as s:
            s.execute(update(Message).where(Message.id == message_id).values(
                status="failed", lease_until=None, next_attempt_at=None, last_error=error))

    def queue_counts(self) -> dict[str, int]:
        """Outbound messages by status, sent ones included (a count of every message)."""
        with self._tx() as s:
            rows = s.execute(select(Message.status, func.count())
                             .where(Message.direction == "out").group_by(Message.status))
            return {status: count for status, count in rows}

    def pending_counts(self) -> dict[str, int]:
        """How many messages are queued, being sent, or failed: the queue's health. Each is
        a range of an index that starts with the status, so the cost does not grow with the
        messages already sent (the health check asks this, without a token, as often as anyone
        likes)."""
        with self._tx() as s:
            counted = dict(s.execute(PENDING_COUNTS).tuples().all())
        return {status: counted.get(status, 0) for status in PENDING}
