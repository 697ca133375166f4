"""Aggregates for the reports pages: how many sent messages were seen, views per day, and how
long people took to open a message. Each is one grouped query, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, extract, func, select
from sqlalchemy.orm import Session

from .base import StoreBase
from .models import Mailbox, Message, ViewEvent

__all__ = ["DELAY_LIMITS", "MailboxShare", "Report", "ReportStore"]

# Upper bounds (seconds) of the time-to-first-view buckets; one more bucket holds the rest.
DELAY_LIMITS = (3600, 6 * 3600, 24 * 3600, 3 * 24 * 3600)


@dataclass(frozen=True)
class MailboxShare:
    mailbox_id: int
    sent: int  # outbound messages delivered in the period
    tracked: int
    viewed: int  # tracked, and seen by a person: a human view or a human reply


@dataclass(frozen=True)
class Report:
    since: datetime
    days: int
    by_mailbox: list[MailboxShare] = field(default_factory=list)
    views_per_day: list[tuple[date, int]] = field(default_factory=list)  # every day, oldest first
    machine_fetches: int = 0
    first_view_buckets: list[int] = field(default_factory=lambda: [0] * (len(DELAY_LIMITS) + 1))

    @property
    def sent(self) -> int:
        return sum(b.sent for b in self.by_mailbox)

    @property
    def tracked(self) -> int:
        return sum(b.tracked for b in self.by_mailbox)

    @property
    def viewed(self) -> int:
        return sum(b.viewed for b in self.by_mailbox)


def _as_date(value: Any) -> date:
    # SQLite's date() gives text, PostgreSQL's a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


class ReportStore(StoreBase):
    def report(self, mailbox_ids: Sequence[int], since: datetime, days: int) -> Report:
        """Figures for messages sent by ``mailbox_ids`` since ``since`` (aware UTC, the start
        of the first of ``days`` days) and for views made since then."""
        if not mailbox_ids:
            return Report(since, days, views_per_day=_fill({}, since, days))
        ids = list(mailbox_ids)
        with self._tx() as s:
            per_day, machine = self._views(s, ids, since)
            return Report(since, days, by_mailbox=self._shares(s, ids, since),
                          views_per_day=_fill(per_day, since, days), machine_fetches=machine,
                          first_view_buckets=self._delays(s, ids, since))

    def _in_period(self, ids: list[int], since: datetime) -> list[ColumnElement[bool]]:
        return [Message.mailbox_id.in_(ids), Message.direction == "out",
                Message.status == "sent", Message.sent_at >= since]

    def _shares(self, s: Session, ids: list[int], since: datetime) -> list[MailboxShare]:
        seen = (Message.view_count > 0) | Message.replied_at.is_not(None)
        tracked = case((Message.tracked.is_(True), 1), else_=0)
        viewed = case((Message.tracked.is_(True) & seen, 1), else_=0)
        rows = s.execute(
            select(Message.mailbox_id, func.count(), func.sum(tracked), func.sum(viewed))
            .where(*self._in_period(ids, since)).group_by(Message.mailbox_id)
            .order_by(Message.mailbox_id)).tuples()
        return [MailboxShare(int(mid), int(n), int(t or 0), int(v or 0))
                for mid, n, t, v in rows]

    def _views(self, s: Session, ids: list[int], since: datetime) -> tuple[dict[date, int], int]:
        """Human views per day and machine fetches in all, in one pass over the period's
        views. With every mailbox asked for (an admin's overview), every view qualifies:
        reading the views alone, in the order of their time index, spares a lookup of each
        one's message (hundreds of thousands a month at scale)."""
        day = func.date(ViewEvent.at)
        q = (select(day, ViewEvent.verdict, func.count()).where(ViewEvent.at >= since)
             .group_by(day, ViewEvent.verdict))
        if not self._all_mailboxes(s, ids):
            q = q.join(Message, Message.id == ViewEvent.message_id).where(
                Message.mailbox_id.in_(ids))
        per_day: dict[date, int] = {}
        machine = 0
        for d, verdict, n in s.execute(q).tuples():
            if verdict == "human":
                per_day[_as_date(d)] = int(n)
            else:
                machine += int(n)
        return per_day, machine

    def _all_mailboxes(self, s: Session, ids: list[int]) -> bool:
        every = set(s.scalars(select(Mailbox.id)))
        return every.issubset(ids)

    def _delays(self, s: Session, ids: list[int], since: datetime) -> list[int]:
        # First seen: the earlier of the first human view and a human reply.
        first = case(
            (Message.first_viewed_at.is_(None), Message.replied_at),
            (Message.replied_at.is_(None), Message.first_viewed_at),
            (Message.replied_at < Message.first_viewed_at, Message.replied_at),
            else_=Message.first_viewed_at)
        secs = self._seconds_between(Message.sent_at, first)
        bucket = case(*[(secs < limit, i) for i, limit in enumerate(DELAY_LIMITS)],
                      else_=len(DELAY_LIMITS))
        rows = s.execute(
            select(bucket, func.count())
            .where(*self._in_period(ids, since), Message.tracked.is_(True),
                   (Message.first_viewed_at.is_not(None)) | Message.replied_at.is_not(None))
            .group_by(bucket)).tuples()
        counts = [0] * (len(DELAY_LIMITS) + 1)
        for i, n in rows:
            counts[int(i)] = int(n)
        return counts

    def _seconds_between(self, start: Any, end: Any) -> Any:
        if self.db.is_sqlite:
            return (func.julianday(end) - func.julianday(start)) * 86400
        return extract("epoch", end - start)


def _fill(counts: dict[date, int], since: datetime, days: int) -> list[tuple[date, int]]:
    first = since.date()
    return [(d, counts.get(d, 0)) for d in (first + timedelta(days=i) for i in range(days))]
