"""Pixel views: an append-only table of events, and each message's summary of them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.orm import Session

from .base import StoreBase, view_record
from .models import Message, ViewEvent
from .records import Judged, ViewIn, ViewRecord

# Classifies a hit, given the time its message was sent (None if not yet known).
Judge = Callable[[ViewIn, datetime | None], Judged]


def _unjudged(view: ViewIn, sent_at: datetime | None) -> Judged:
    return Judged("human", "", "")


def _later(column: Any, value: datetime) -> Any:
    return case((column > value, column), else_=value)


class ViewStore(StoreBase):
    def record_views(self, views: Sequence[ViewIn], judge: Judge = _unjudged) -> int:
        """Append a batch of views, judged by ``judge``, and update their messages'
        summaries in the same transaction: human views and machine fetches apart. Views of
        messages that do not exist (deleted, or another instance's) are dropped. Returns how
        many were stored."""
        if not views:
            return 0
        ids = {v.message_id for v in views}
        with self._tx() as s:
            sent = dict(s.execute(select(Message.id, Message.sent_at)
                                  .where(Message.id.in_(ids))).tuples().all())
            keep = [(v, judge(v, sent[v.message_id])) for v in views if v.message_id in sent]
            if not keep:
                return 0
            s.execute(insert(ViewEvent), [
                {"message_id": v.message_id, "recipient": v.recipient, "at": v.at,
                 "method": v.method, "ip": v.ip, "user_agent": v.user_agent,
                 "headers_json": json.dumps(v.headers, separators=(",", ":")),
                 "verdict": j.verdict, "reason": j.reason, "client": j.client}
                for v, j in keep
            ])
            self._summarise(s, [(v.message_id, v.at, j.verdict) for v, j in keep])
            return len(keep)

    def _summarise(self, s: Session, hits: list[tuple[int, datetime, str]]) -> None:
        summary: dict[tuple[int, str], list[Any]] = {}
        for mid, at, verdict in hits:
            entry = summary.setdefault((mid, verdict), [at, at, 0])
            entry[0], entry[1], entry[2] = min(entry[0], at), max(entry[1], at), entry[2] + 1
        for (mid, verdict), (first, last, count) in sorted(summary.items()):
            if verdict == "human":
                values = {"view_count": Message.view_count + count,
                          "first_viewed_at": func.coalesce(Message.first_viewed_at, first),
                          "last_viewed_at": _later(Message.last_viewed_at, last)}
            else:
                values = {"machine_count": Message.machine_count + count,
                          "first_machine_at": func.coalesce(Message.first_machine_at, first),
                          "last_machine_at": _later(Message.last_machine_at, last)}
            s.execute(update(Message).where(Message.id == mid).values(**values))

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
