"""Pixel views: an append-only table of events, and each message's summary of them."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from ..records import Judged, ViewIn, ViewRecord
from .base import StoreBase, translated, view_record
from .models import Message, ViewEvent

# What a view is taken for when no verdict is given (tests, imports of old data).
_HUMAN = Judged("human", "", "")


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

    def sending_times(self, ids: set[int]) -> dict[int, datetime | None]:
        """Each existing message's sending time (None when not sent yet); an id missing from
        the answer is a message that does not exist. What the judge needs before a batch is
        written; mostly answered from a short-lived cache, without the database."""
        try:
            with translated(self.store.db):
                conn, _ = self._connection()
                return self._sending_times(conn, ids, cached=True)
        except BaseException:
            self.close()  # the next batch starts on a fresh connection
            raise
        finally:
            self._used_at = time.monotonic()

    def write(self, judged: Sequence[tuple[ViewIn, Judged]]) -> int:
        """Append judged views and update their messages' summaries in one transaction;
        views of messages that no longer exist are dropped. Returns how many were stored."""
        if not judged:
            return 0
        try:
            with translated(self.store.db):
                try:
                    return self._write(judged, check=False)
                except IntegrityError:
                    # A message was deleted since its sending time was read: ask again.
                    return self._write(judged, check=True)
        except BaseException:
            self.close()
            raise
        finally:
            self._used_at = time.monotonic()

    def record(self, views: Sequence[ViewIn], verdicts: Sequence[Judged] | None = None
               ) -> int:
        """:meth:`write` for views with their verdicts (default: human)."""
        return self.write(list(zip(views, verdicts or [_HUMAN] * len(views), strict=True)))

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
        known = self._sent
        if time.monotonic() - self._sent_since > _SENT_CACHE_SECONDS or not cached:
            known.clear()
            self._sent_since = time.monotonic()
        found: dict[int, datetime | None] = {mid: known[mid] for mid in ids if mid in known}
        missing = ids.difference(found)
        if missing:
            with conn.begin():
                rows = conn.execute(_SENT, {"ids": sorted(missing)}).all()
            for mid, at in rows:
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

    def _write(self, judged: Sequence[tuple[ViewIn, Judged]], check: bool) -> int:
        conn, writer = self._connection()
        with conn.begin():
            keep = judged
            if check:
                ids = sorted({v.message_id for v, _ in judged})
                existing = {mid for mid, _ in conn.execute(_SENT, {"ids": ids})}
                keep = [(v, j) for v, j in judged if v.message_id in existing]
                self._sent.clear()
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

    def record_views(self, views: Sequence[ViewIn], verdicts: Sequence[Judged] | None = None
                     ) -> int:
        """Append a batch of views with their verdicts (default: human), and update their
        messages' summaries in the same transaction: human views and machine fetches apart.
        Views of messages that do not exist (deleted, or another instance's) are dropped.
        Returns how many were stored."""
        writer = ViewWriter(self)
        try:
            return writer.record(views, verdicts)
        finally:
            writer.close()

    def list_views(self, message_id: int, limit: int = 1000) -> list[ViewRecord]:
        q = (select(ViewEvent).where(ViewEvent.message_id == message_id)
             .order_by(ViewEvent.at, ViewEvent.id).limit(limit))
        with self._tx() as s:
            return [view_record(r) for r in s.scalars(q)]

    def stored_views(self, after_id: int, limit: int = 5000
                     ) -> list[tuple[int, ViewIn, datetime | None, Judged]]:
        """Stored views after ``after_id``, oldest first, each with its id, its message's
        sending time and its verdict: what judging them again needs."""
        with self._tx() as s:
            rows = s.execute(
                select(ViewEvent, Message.sent_at).join(Message)
                .where(ViewEvent.id > after_id).order_by(ViewEvent.id).limit(limit)).all()
            return [(e.id, ViewIn(e.message_id, e.recipient, e.at, e.method, e.ip,
                                  e.user_agent, json.loads(e.headers_json)),
                     sent_at, Judged(e.verdict, e.reason, e.client))
                    for e, sent_at in rows]

    def set_verdicts(self, verdicts: Sequence[tuple[int, Judged]]) -> None:
        """Give stored views new verdicts (by view id); :meth:`rebuild_summaries` after."""
        with self._tx() as s:
            for view_id, j in verdicts:
                s.execute(update(ViewEvent).where(ViewEvent.id == view_id).values(
                    verdict=j.verdict, reason=j.reason, client=j.client))

    def rebuild_summaries(self) -> None:
        """Re-derive every message's view summary from its events."""
        with self._tx() as s:
            self._rebuild_summaries(s)

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
