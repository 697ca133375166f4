"""Clicks: an append-only table of click redirect requests, human and machine, and the view
a person's click implies.

Written in batches like views (storage/views.py), on the same kind of held connection: the
click recorder's writer thread keeps one :class:`ClickWriter`. Other code (webhooks, reports)
reads ``click_events`` as it is; nothing updates a click but a later burst's verdict on the
clicks it caught (:meth:`ClickWriter.write`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..records import ClickIn, ClickRecord, Judged, ViewIn
from .base import StoreBase, translated, viewed_copies
from .models import ClickEvent, Copy, Message, ViewEvent
from .views import ViewStore, ViewWriter, _executemany, _naive_utc, _sqlite_time
from .webhooks import click_events

__all__ = ["IMPLIED_REASON", "UNDONE_REASON", "ClickStore", "ClickWriter"]

# The reason of the view a person's click implies, when their copy had none.
IMPLIED_REASON = "followed a link (the message was seen)"
# That view's reason once the click is found to be the first of a scanner's burst.
UNDONE_REASON = "implied by a click that turned out to be a scanner's (not a view)"

_INSERT = ("INSERT INTO click_events (message_id, copy_id, recipient, link, url, at, method, "
           "ip, user_agent, headers_json, verdict, reason, client) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_UNVIEWED = "SELECT id FROM copies WHERE view_count = 0 AND id IN ({})"
_EXISTING = "SELECT id FROM messages WHERE id IN ({})"
# A burst found later turns the clicks it caught before into machine clicks.
_DEMOTE = ("UPDATE click_events SET verdict = 'machine', reason = ? WHERE copy_id = ? AND "
           "verdict = 'human' AND at >= ? AND at <= ? AND ip IS ? AND user_agent IS ?")
_SAME = " IS NOT DISTINCT FROM ?"  # PostgreSQL's "IS" takes only NULL and booleans
_URL_LIMIT = 4096


def _native(sql: str, paramstyle: str) -> str:
    return sql if paramstyle == "qmark" else sql.replace("?", "%s")


class ClickWriter:
    """Writes batches of judged clicks over the connection of a :class:`ViewWriter` it
    holds (which also finds each click's copy, and the privacy setting's say on it, as it
    does for pixel hits). Not thread-safe: one thread uses it."""

    def __init__(self, views: ViewWriter) -> None:
        self.views = views

    def close(self) -> None:
        self.views.close()

    def resolve(self, clicks: Sequence[ClickIn]) -> list[tuple[ClickIn, datetime | None]]:
        """Where each click lands (its message, copy, position) and when the copy was sent;
        clicks of unknown copies, or of a recipient who may not be followed now, are left
        out (see :meth:`ViewWriter.resolve`)."""
        found = self.views.resolve(clicks)
        return [(cast(ClickIn, c), at) for c, at in found]

    def write(self, judged: Sequence[tuple[ClickIn, Judged]],
              demote: Sequence[tuple[ClickIn, datetime, str]] = ()) -> int:
        """Append judged clicks, the view each copy's first human click implies when the
        copy had none, and the demotion of earlier clicks a burst caught (click, since when,
        reason), in one transaction. Clicks of messages deleted meanwhile are dropped."""
        if not judged:
            return 0
        views = self.views
        try:
            with translated(views.store.db):
                try:
                    return self._write(judged, demote, check=False)
                except IntegrityError:
                    return self._write(judged, demote, check=True)
        except BaseException:
            views.close()
            raise
        finally:
            views.touched()

    def _write(self, judged: Sequence[tuple[ClickIn, Judged]],
               demote: Sequence[tuple[ClickIn, datetime, str]], check: bool) -> int:
        conn = self.views.connection()
        style = conn.dialect.paramstyle
        time_of = _time_converter(conn.dialect.name)
        with conn.begin():
            # Refused, listed or not consented now: followed, not recorded (as views).
            keep = list(self.views.still_allowed(conn, judged))
            if check:
                ids = sorted({c.message_id for c, _ in keep})
                existing = {r[0] for r in conn.exec_driver_sql(
                    _native(_EXISTING.format(", ".join("?" * len(ids))), style), tuple(ids))}
                keep = [(c, j) for c, j in keep if c.message_id in existing]
            if not keep:
                return 0
            rows: list[tuple[Any, ...]] = []
            for c, j in keep:
                at = time_of(c.at)
                if c.anonymous:
                    rows.append((c.message_id, None, 0, c.link, c.url[:_URL_LIMIT], at,
                                 c.method, None, None, "{}", j.verdict, j.reason, j.client))
                else:
                    rows.append((c.message_id, c.copy_id, c.recipient, c.link,
                                 c.url[:_URL_LIMIT], at, c.method, c.ip, c.user_agent,
                                 json.dumps(c.headers, separators=(",", ":")), j.verdict,
                                 j.reason, j.client))
            _executemany(conn, _native(_INSERT, style), rows)
            if demote:
                sql = _DEMOTE if conn.dialect.name == "sqlite" else _DEMOTE.replace(" IS ?", _SAME)
                _executemany(conn, _native(sql, style), [
                    (reason, c.copy_id, time_of(since), time_of(c.at), c.ip, c.user_agent)
                    for c, since, reason in demote if c.copy_id is not None])
                for c, since, _ in demote:
                    if c.copy_id is not None:
                        _undo_implied(conn, c.copy_id, c.message_id, since, c.at)
            self._imply_views(conn, keep, style)
            if any(j.verdict == "human" for _, j in keep):  # webhooks, when one takes clicks
                with Session(bind=conn) as s:
                    click_events(s, keep)
                    s.flush()
            return len(keep)

    def _imply_views(self, conn: Any, keep: Sequence[tuple[ClickIn, Judged]],
                     style: str) -> None:
        """A person who followed a link saw the message: the first human click on a copy
        without a human view counts as one."""
        first: dict[int, tuple[ClickIn, Judged]] = {}
        for c, j in keep:
            if (j.verdict == "human" and not c.anonymous and c.copy_id is not None
                    and (c.copy_id not in first or c.at < first[c.copy_id][0].at)):
                first[c.copy_id] = (c, j)
        if not first:
            return
        ids = sorted(first)
        unviewed = {r[0] for r in conn.exec_driver_sql(
            _native(_UNVIEWED.format(", ".join("?" * len(ids))), style), tuple(ids))}
        implied = []
        for cid in ids:
            if cid in unviewed:
                c, j = first[cid]
                view = ViewIn(c.message_id, c.recipient, c.at, c.method, c.ip, c.user_agent,
                              dict(c.headers), copy_key=c.copy_key, copy_id=cid)
                implied.append((view, Judged("human", IMPLIED_REASON, j.client)))
        if implied:
            self.views.append(conn, implied)


def _undo_implied(conn: Any, copy_id: int, message_id: int, since: datetime,
                  until: datetime) -> None:
    """The view a click implied, when a burst shows the click was a scanner's: judged
    machine after all, and the copy's and message's summaries moved with it (the counts by
    the difference, the times read again from the events)."""
    ids = [r[0] for r in conn.execute(select(ViewEvent.id).where(
        ViewEvent.copy_id == copy_id, ViewEvent.reason == IMPLIED_REASON,
        ViewEvent.verdict == "human", ViewEvent.at >= since, ViewEvent.at <= until))]
    if not ids:
        return
    conn.execute(update(ViewEvent).where(ViewEvent.id.in_(ids)).values(
        verdict="machine", reason=UNDONE_REASON))
    for table, column, key in ((Copy, ViewEvent.copy_id, copy_id),
                               (Message, ViewEvent.message_id, message_id)):
        def at(fn: Any, verdict: str, column: Any = column, key: int = key) -> Any:
            return (select(fn(ViewEvent.at)).where(column == key, ViewEvent.verdict == verdict)
                    .scalar_subquery())

        conn.execute(update(table).where(table.id == key).values(
            view_count=table.view_count - len(ids),
            machine_count=table.machine_count + len(ids),
            first_viewed_at=at(func.min, "human"), last_viewed_at=at(func.max, "human"),
            first_machine_at=at(func.min, "machine"),
            last_machine_at=at(func.max, "machine")))
    conn.execute(update(Message).where(Message.id == message_id).values(
        viewed_copies=viewed_copies()))


def _time_converter(dialect: str) -> Any:
    return _sqlite_time if dialect == "sqlite" else _naive_utc


class ClickStore(StoreBase):
    def click_writer(self) -> ClickWriter:
        """A writer that keeps its connection between batches (close it when done)."""
        return ClickWriter(ViewWriter(cast("ViewStore", self)))

    def list_clicks(self, message_id: int, limit: int = 1000) -> list[ClickRecord]:
        """A message's clicks, oldest first, each with its copy's recipient."""
        return self._clicks(ClickEvent.message_id == message_id, limit)

    def clicks_of_copies(self, copy_ids: Sequence[int]) -> list[ClickRecord]:
        """The clicks of these copies' links, oldest first (a person's data export)."""
        if not copy_ids:
            return []
        return self._clicks(ClickEvent.copy_id.in_(sorted(copy_ids)), None)

    def erase_clicks(self, copy_ids: Sequence[int]) -> int:
        """Delete the clicks of these copies' links (a person's erasure); returns how many."""
        if not copy_ids:
            return 0
        with self._tx() as s:
            done = s.execute(delete(ClickEvent).where(ClickEvent.copy_id.in_(sorted(copy_ids))))
            return cast(CursorResult[Any], done).rowcount

    def purge_click_details(self, before: datetime) -> int:
        """Clear the personal details of clicks older than ``before`` (the retention
        period): IP address, user agent, headers and the copy they name. The link, the
        verdict and the time stay. Returns how many clicks were cleared."""
        with self._tx() as s:
            done = s.execute(update(ClickEvent).where(
                ClickEvent.at < before, ClickEvent.copy_id.is_not(None)).values(
                    ip=None, user_agent=None, headers_json="{}", copy_id=None, recipient=0))
            return cast(CursorResult[Any], done).rowcount

    def _clicks(self, where: Any, limit: int | None) -> list[ClickRecord]:
        q = (select(ClickEvent, Copy.recipient)
             .outerjoin(Copy, Copy.id == ClickEvent.copy_id)
             .where(where).order_by(ClickEvent.at, ClickEvent.id).limit(limit))
        with self._tx() as s:
            return [ClickRecord(
                id=e.id, message_id=e.message_id, copy_id=e.copy_id, recipient=e.recipient,
                recipient_address=address, link=e.link, url=e.url, at=e.at, method=e.method,
                ip=e.ip, user_agent=e.user_agent,
                verdict=e.verdict,
                reason=e.reason, client=e.client) for e, address in s.execute(q)]
