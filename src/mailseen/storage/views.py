"""Pixel views: an append-only table of events, and each message's summary of them."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from ..records import Judged, ViewIn, ViewRecord
from .base import StoreBase, translated, view_record
from .models import Message, ViewEvent

# Classifies a hit, given the time its message was sent (None if not yet known).
Judge = Callable[[ViewIn, datetime | None], Judged]


def _unjudged(view: ViewIn, sent_at: datetime | None) -> Judged:
    return Judged("human", "", "")


# The hot path's statements, built once, and run as plain SQL through the driver: recording
# views is the busiest write mailseen does, and SQLAlchemy's per-parameter work (compiling,
# type processing) cost more CPU than the database itself (see docs/performance.md). Times
# still go through UTCDateTime's own bind processor, so they are stored exactly as elsewhere.
_messages = cast(Table, Message.__table__)
_SENT = (select(_messages.c.id, _messages.c.sent_at)
         .where(_messages.c.id.in_(bindparam("ids", expanding=True))))
_INSERT = ("INSERT INTO view_events (message_id, recipient, at, method, ip, user_agent, "
           "headers_json, verdict, reason, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _summary_update(count: str, first: str, last: str) -> str:
    # The count grows by n; the first time is kept once set; the last is the later of the two.
    return (f"UPDATE messages SET {count} = {count} + ?, {first} = COALESCE({first}, ?), "
            f"{last} = CASE WHEN {last} > ? THEN {last} ELSE ? END WHERE id = ?")


_SUMMARY = {"human": _summary_update("view_count", "first_viewed_at", "last_viewed_at"),
            "machine": _summary_update("machine_count", "first_machine_at", "last_machine_at")}


class _Writer:
    """The statements in the driver's placeholder style and the time converter, per dialect."""

    def __init__(self, dialect: Dialect) -> None:
        def native(sql: str) -> str:
            return sql if dialect.paramstyle == "qmark" else sql.replace("?", "%s")

        self.insert = native(_INSERT)
        self.summary = {kind: native(sql) for kind, sql in _SUMMARY.items()}
        self.time = _sqlite_time if dialect.name == "sqlite" else _naive_utc


_to_json = json.JSONEncoder(separators=(",", ":")).encode


def _naive_utc(value: datetime) -> datetime:
    """A time as UTCDateTime binds it: in UTC, without tzinfo."""
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).replace(tzinfo=None)


def _sqlite_time(value: datetime) -> str:
    """A time as UTCDateTime binds it on SQLite: SQLAlchemy's text form, always with
    microseconds, so that times compare as strings (tests/test_storage.py checks that both
    agree)."""
    if value.tzinfo is UTC:  # the pixel's times: drop the "+00:00" rather than copy the time
        return value.isoformat(" ", "microseconds")[:-6]
    return _naive_utc(value).isoformat(" ", "microseconds")


# Sending times of recently seen messages, kept by a ViewWriter between batches: a hit usually
# belongs to a message hit a moment ago, and a sending time never changes once set. Forgotten
# every so often, so that a restored backup or a deleted message is noticed soon.
_SENT_CACHE_SIZE = 10_000
_SENT_CACHE_SECONDS = 10.0
_HEADERS_CACHE_SIZE = 4096
# A connection held this long without use is replaced before the next batch: a server restart,
# an idle-session timeout or a NAT dropping a quiet TCP connection would otherwise cost the
# next batch (the pool's pre-ping only checks connections as they are checked out).
_IDLE_RECONNECT_SECONDS = 5.0


def _executemany(conn: Connection, statement: str, rows: list[Any]) -> None:
    """``conn.exec_driver_sql`` without SQLAlchemy's per-statement bookkeeping (it cost more
    than SQLite's own work for a pixel batch); the driver's errors are wrapped as SQLAlchemy
    wraps them, so callers see the same exceptions."""
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(statement, rows)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(statement, rows, exc, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect) from exc
    finally:
        cursor.close()


class ViewWriter:
    """Writes batches of views over one connection held between batches.

    The pixel recorder's writer thread keeps one for its whole life: checking a connection out
    of the pool, resetting it on return, and looking up the sending time of the same few
    messages for every batch cost more than writing the batch. Not thread-safe: one thread
    uses it. After a failed batch the connection is dropped and the next batch opens a new one
    (a restarted PostgreSQL, a database that was full); so is one left idle for a while.
    """

    idle_reconnect = _IDLE_RECONNECT_SECONDS

    def __init__(self, store: ViewStore) -> None:
        self.store = store
        self._conn: Connection | None = None
        self._used_at = 0.0
        self._writer: _Writer | None = None
        self._sent: dict[int, datetime] = {}
        self._sent_since = time.monotonic()
        self._json: dict[tuple[tuple[str, str], ...], str] = {}

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                conn.close()

    def record(self, views: Sequence[ViewIn], judge: Judge = _unjudged) -> int:
        """See :meth:`ViewStore.record_views`."""
        if not views:
            return 0
        # Each view is judged once, even when the batch is written twice: the judge keeps
        # state (what each client fetched just now), and judging a view again would call it
        # a repeat of itself.
        verdicts: list[Judged | None] = [None] * len(views)
        try:
            with translated(self.store.db):
                try:
                    return self._record(views, judge, verdicts, cached=True)
                except IntegrityError:
                    # A message in the cache was deleted meanwhile: ask the database.
                    return self._record(views, judge, verdicts, cached=False)
        except BaseException:
            self.close()  # the next batch starts on a fresh connection
            raise
        finally:
            self._used_at = time.monotonic()

    def _connection(self) -> tuple[Connection, _Writer]:
        if (self._conn is None or self._conn.invalidated or self._conn.closed
                or time.monotonic() - self._used_at > self.idle_reconnect):
            self.close()  # back to the pool, whose pre-ping checks it before it is reused
            self._conn = self.store.db.engine.connect()
        if self._writer is None:
            self._writer = _Writer(self._conn.dialect)
        return self._conn, self._writer

    def _sending_times(self, conn: Connection, ids: set[int],
                       cached: bool) -> dict[int, datetime | None]:
        """Each existing message's sending time (None when not sent yet); missing ids are
        messages that do not exist."""
        known = self._sent
        if time.monotonic() - self._sent_since > _SENT_CACHE_SECONDS or not cached:
            known.clear()
            self._sent_since = time.monotonic()
        found: dict[int, datetime | None] = {mid: known[mid] for mid in ids if mid in known}
        missing = ids.difference(found)
        if missing:
            for mid, at in conn.execute(_SENT, {"ids": sorted(missing)}):
                found[mid] = at
                if at is not None:  # a time still to come is looked up again
                    if len(known) >= _SENT_CACHE_SIZE:
                        known.clear()
                    known[mid] = at
        return found

    def _headers_json(self, headers: dict[str, str]) -> str:
        # Hits of one client carry the same headers: encode each set once.
        key = tuple(headers.items())
        text = self._json.get(key)
        if text is None:
            if len(self._json) >= _HEADERS_CACHE_SIZE:
                self._json.clear()
            text = self._json[key] = _to_json(headers)
        return text

    def _record(self, views: Sequence[ViewIn], judge: Judge, verdicts: list[Judged | None],
                cached: bool) -> int:
        conn, writer = self._connection()
        with conn.begin():
            sent = self._sending_times(conn, {v.message_id for v in views}, cached)
            keep: list[tuple[ViewIn, Judged]] = []
            for i, v in enumerate(views):
                if v.message_id in sent:
                    j = verdicts[i]
                    if j is None:
                        j = verdicts[i] = judge(v, sent[v.message_id])
                    keep.append((v, j))
            if not keep:
                return 0
            time_of, headers_json = writer.time, self._headers_json
            rows = []
            summary: dict[tuple[int, str], list[Any]] = {}
            for v, j in keep:
                at = time_of(v.at)  # as stored: bound times of one dialect compare correctly
                rows.append((v.message_id, v.recipient, at, v.method, v.ip, v.user_agent,
                             headers_json(v.headers), j.verdict, j.reason, j.client))
                entry = summary.get((v.message_id, j.verdict))
                if entry is None:
                    summary[v.message_id, j.verdict] = [at, at, 1]
                else:
                    entry[0], entry[1] = min(entry[0], at), max(entry[1], at)
                    entry[2] += 1
            _executemany(conn, writer.insert, rows)
            for verdict, statement in writer.summary.items():
                # In id order, so that concurrent writers lock rows in the same order.
                updates = [(n, first, last, last, mid)
                           for (mid, kind), (first, last, n) in sorted(summary.items())
                           if kind == verdict]
                if updates:
                    _executemany(conn, statement, updates)
            return len(keep)


class ViewStore(StoreBase):
    def view_writer(self) -> ViewWriter:
        """A writer that keeps its connection between batches (close it when done)."""
        return ViewWriter(self)

    def record_views(self, views: Sequence[ViewIn], judge: Judge = _unjudged) -> int:
        """Append a batch of views, judged by ``judge``, and update their messages'
        summaries in the same transaction: human views and machine fetches apart. Views of
        messages that do not exist (deleted, or another instance's) are dropped. Returns how
        many were stored."""
        writer = ViewWriter(self)
        try:
            return writer.record(views, judge)
        finally:
            writer.close()

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
