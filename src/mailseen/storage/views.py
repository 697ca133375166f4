"""Pixel views: an append-only table of events, and each message's summary of them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from .base import StoreBase, view_record
from .models import Message, UTCDateTime, ViewEvent
from .records import Judged, ViewIn, ViewRecord

# Classifies a hit, given the time its message was sent (None if not yet known).
Judge = Callable[[ViewIn, datetime | None], Judged]


def _unjudged(view: ViewIn, sent_at: datetime | None) -> Judged:
    return Judged("human", "", "")


def _later(column: Any, value: Any) -> Any:
    return case((column > value, column), else_=value)


# The hot path's statements, built once: Core, not the ORM, because recording views is the
# busiest write mailseen does (see docs/performance.md).
_messages = cast(Table, Message.__table__)
_SENT = (select(_messages.c.id, _messages.c.sent_at)
         .where(_messages.c.id.in_(bindparam("ids", expanding=True))))
_INSERT = insert(cast(Table, ViewEvent.__table__))


def _summary_update(count: str, first: str, last: str) -> Any:
    col = _messages.c
    return (update(_messages).where(col.id == bindparam("mid")).values({
        count: col[count] + bindparam("n"),
        # Typed binds, so the UTC conversion of UTCDateTime applies as for every other time.
        first: func.coalesce(col[first], bindparam("first", type_=UTCDateTime())),
        last: _later(col[last], bindparam("last", type_=UTCDateTime())),
    }))


_HUMAN = _summary_update("view_count", "first_viewed_at", "last_viewed_at")
_MACHINE = _summary_update("machine_count", "first_machine_at", "last_machine_at")


class ViewStore(StoreBase):
    def record_views(self, views: Sequence[ViewIn], judge: Judge = _unjudged) -> int:
        """Append a batch of views, judged by ``judge``, and update their messages'
        summaries in the same transaction: human views and machine fetches apart. Views of
        messages that do not exist (deleted, or another instance's) are dropped. Returns how
        many were stored."""
        if not views:
            return 0
        with self._conn() as conn:
            sent = {mid: at for mid, at in conn.execute(
                _SENT, {"ids": sorted({v.message_id for v in views})})}
            keep = [(v, judge(v, sent[v.message_id])) for v in views if v.message_id in sent]
            if not keep:
                return 0
            conn.execute(_INSERT, [
                {"message_id": v.message_id, "recipient": v.recipient, "at": v.at,
                 "method": v.method, "ip": v.ip, "user_agent": v.user_agent,
                 "headers_json": json.dumps(v.headers, separators=(",", ":")),
                 "verdict": j.verdict, "reason": j.reason, "client": j.client}
                for v, j in keep
            ])
            summary: dict[tuple[int, str], list[Any]] = {}
            for v, j in keep:
                entry = summary.setdefault((v.message_id, j.verdict), [v.at, v.at, 0])
                entry[0], entry[1] = min(entry[0], v.at), max(entry[1], v.at)
                entry[2] += 1
            for verdict, statement in (("human", _HUMAN), ("machine", _MACHINE)):
                rows = [{"mid": mid, "n": n, "first": first, "last": last}
                        for (mid, kind), (first, last, n) in sorted(summary.items())
                        if kind == verdict]
                if rows:
                    conn.execute(statement, rows)
            return len(keep)

    def list_views(self, message_id: int, limit: int = 1000) -> list[ViewRecord]:
        q = (select(ViewEvent).where(ViewEvent.message_id == message_id)
             .order_by(ViewEvent.at, ViewEvent.id).limit(limit))
        with self._tx() as s:
            return [view_record(r) for r in s.scalars(q)]

    def reclassify(self, judge: Judge, batch: int = 5000) -> tuple[int, int]:
        """Judge every stored view again and re-derive every summary from the events.
        Returns (views judged, verdicts changed)."""
        seen = changed = 0
        last_id = 0
        while True:
            with self._tx() as s:
                rows = list(s.execute(
                    select(ViewEvent, Message.sent_at).join(Message)
                    .where(ViewEvent.id > last_id).order_by(ViewEvent.id).limit(batch)))
                if not rows:
                    break
                for event, sent_at in rows:
                    view = ViewIn(event.message_id, event.recipient, event.at, event.method,
                                  event.ip, event.user_agent, json.loads(event.headers_json))
                    j = judge(view, sent_at)
                    if (j.verdict, j.reason, j.client) != (event.verdict, event.reason,
                                                           event.client):
                        event.verdict, event.reason, event.client = j.verdict, j.reason, j.client
                        changed += 1
                    seen += 1
                last_id = rows[-1][0].id
        with self._tx() as s:
            self._rebuild_summaries(s)
        return seen, changed

    def _rebuild_summaries(self, s: Session) -> None:
        def agg(fn: Any, verdict: str) -> Any:
            return (select(fn).where(ViewEvent.message_id == Message.id,
                                     ViewEvent.verdict == verdict).scalar_subquery())

        s.execute(update(Message).values(
            view_count=agg(func.count(), "human"),
            first_viewed_at=agg(func.min(ViewEvent.at), "human"),
            last_viewed_at=agg(func.max(ViewEvent.at), "human"),
            machine_count=agg(func.count(), "machine"),
            first_machine_at=agg(func.min(ViewEvent.at), "machine"),
            last_machine_at=agg(func.max(ViewEvent.at), "machine"),
        ))
