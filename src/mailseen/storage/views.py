"""Pixel views: an append-only table of events, and each message's summary of them."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from ..records import Judged, ViewIn, ViewRecord
from .base import StoreBase, translated, view_record, viewed_copies
from .models import Copy, Message, ViewEvent
from .privacy import PrivacyGate
from .webhooks import INSERT_SQL as _HOOK_INSERT
from .webhooks import ViewHooks

# What a view is taken for when no verdict is given (tests, imports of old data).
_HUMAN = Judged("human", "", "")


# The hot path's statements, built once, and run as plain SQL through the driver: recording
# views is the busiest write mailseen does, and SQLAlchemy's per-parameter work (compiling,
# type processing) cost more CPU than the database itself (see docs/performance.md). Times
# still go through UTCDateTime's own bind processor, so they are stored exactly as elsewhere.
_messages = cast(Table, Message.__table__)
_copies = cast(Table, Copy.__table__)
_SENT = (select(_messages.c.id, _messages.c.sent_at)
         .where(_messages.c.id.in_(bindparam("ids", expanding=True))))
# Where a hit lands: a copy's token names its key; an older token names its message, whose
# one shared copy (position 0) it was.
_BY_KEY = (select(_copies.c.token_key, _copies.c.id, _copies.c.message_id, _copies.c.position,
                  _copies.c.sent_at, _copies.c.pixel, _copies.c.recipient_key,
                  _messages.c.mailbox_id)
           .select_from(_copies.join(_messages, _messages.c.id == _copies.c.message_id))
           .where(_copies.c.token_key.in_(bindparam("keys", expanding=True))))
_BY_MESSAGE = (select(_messages.c.id, _copies.c.id, _messages.c.sent_at, _copies.c.pixel)
               .select_from(_messages.outerjoin(_copies, (_copies.c.message_id
                                                          == _messages.c.id)
                                                & (_copies.c.position == 0)))
               .where(_messages.c.id.in_(bindparam("ids", expanding=True))))
_INSERT = ("INSERT INTO view_events (message_id, recipient, copy_id, at, method, ip, "
           "user_agent, headers_json, verdict, reason, client) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _summary_update(table: str, count: str, first: str, last: str) -> str:
    # The count grows by n; the first time is kept once set; the last is the later of the two.
    return (f"UPDATE {table} SET {count} = {count} + ?, {first} = COALESCE({first}, ?), "
            f"{last} = CASE WHEN {last} > ? THEN {last} ELSE ? END WHERE id = ?")


_SUMMARY = {"human": ("view_count", "first_viewed_at", "last_viewed_at"),
            "machine": ("machine_count", "first_machine_at", "last_machine_at")}
# How many personal copies of a message a person saw, counted again when one of its copies
# had a human view.
_VIEWED_COPIES = ("UPDATE messages SET viewed_copies = (SELECT COUNT(*) FROM copies WHERE "
                  "copies.message_id = messages.id AND copies.recipient IS NOT NULL AND "
                  "copies.pixel = 'personal' AND "
                  "(copies.view_count > 0 OR copies.replied_at IS NOT NULL)) WHERE id = ?")
V = TypeVar("V", bound=ViewIn)  # a view, or a click (records.ClickIn)
# A hit's target: (copy id or None, message id, copy position, sending time, what the copy
# carries, its recipient's address key, the message's mailbox).
Target = tuple[int | None, int, int, datetime | None, str, str | None, int]


class _Writer:
    """The statements in the driver's placeholder style and the time converter, per dialect."""

    def __init__(self, dialect: Dialect) -> None:
        def native(sql: str) -> str:
            return sql if dialect.paramstyle == "qmark" else sql.replace("?", "%s")

        self.insert = native(_INSERT)
        self.summary = {kind: native(_summary_update("messages", *cols))
                        for kind, cols in _SUMMARY.items()}
        self.copy_summary = {kind: native(_summary_update("copies", *cols))
                             for kind, cols in _SUMMARY.items()}
        self.viewed_copies = native(_VIEWED_COPIES)
        self.hook_insert = native(_HOOK_INSERT)
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
        self._sent: dict[tuple[int, int], Target] = {}
        self._sent_since = time.monotonic()
        self._json: dict[tuple[tuple[str, str], ...], str] = {}
        self._gate = PrivacyGate()
        self._hooks = ViewHooks()  # the endpoints that take message.viewed
        # The (mailbox, recipient) of each personal view of the batch being written.
        self._whose: dict[int, tuple[int, str]] = {}

    def close(self) -> None:
        self._hooks.forget()  # a batch may have failed after learning from it
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                conn.close()

    def resolve(self, views: Sequence[ViewIn]) -> list[tuple[ViewIn, datetime | None]]:
        """Find where each hit lands and fill it in (its message, copy and the copy's
        position), with the sending time the judge needs; hits of copies or messages that
        do not exist are left out. Hits that may be counted but not tied to anyone (an
        aggregate pixel) are marked ``anonymous``. Mostly answered from a short-lived
        cache, with no query. Whether each recipient may still be followed is asked when the
        batch is written (:meth:`still_allowed`), in the writing transaction."""
        try:
            with translated(self.store.db):
                conn, _ = self._connection()
                targets = self._targets(conn, views)
        except BaseException:
            self.close()  # the next batch starts on a fresh connection
            raise
        finally:
            self._used_at = time.monotonic()
        whose = self._whose
        whose.clear()
        found = []
        for v in views:
            target = targets.get((v.copy_key, v.message_id if not v.copy_key else 0))
            if target is None:
                continue
            copy_id, v.message_id, position, sent_at, pixel, key, box = target
            if pixel == "aggregate":
                v.anonymous = True
            elif key is not None and pixel == "personal":
                whose[id(v)] = (box, key)  # asked about when written (still_allowed)
            v.copy_id, v.recipient = copy_id, position
            found.append((v, sent_at))
        return found

    def still_allowed(self, conn: Connection, judged: Sequence[tuple[V, Judged]]
                      ) -> Sequence[tuple[V, Judged]]:
        """The views of ``judged`` that may be written, decided in the writing transaction
        by the policy, consents and do-not-track list in force: whether they changed is one
        row read a batch (``privacy_version``); each (mailbox, recipient) is decided once and
        remembered until they change. A view of a recipient who may no longer be followed is
        left out; one the policy now counts only is tied to no copy and keeps nothing."""
        gate = self._gate
        before = gate.version
        gate.refresh(conn)
        if gate.version != before:
            self._hooks.refresh(conn, gate.version)
        whose = self._whose
        if not whose:
            return judged
        gate.load(conn, {pair for v, _ in judged if (pair := whose.get(id(v))) is not None})
        keep = []
        for v, j in judged:
            pair = whose.get(id(v))
            if pair is not None:
                now = gate.pixel(*pair)
                if now == "none":
                    continue
                if now == "aggregate":  # counted for the message, tied to no copy
                    v.copy_id, v.recipient, v.anonymous = None, 0, True
            keep.append((v, j))
        return keep

    def write(self, judged: Sequence[tuple[ViewIn, Judged]]) -> int:
        """Append judged views and update their messages' summaries in one transaction;
        views of messages that no longer exist are dropped. Returns how many were stored."""
        if not judged:
            self._whose.clear()
            return 0
        try:
            with translated(self.store.db):
                try:
                    return self._write(judged, check=False)
                except IntegrityError:
                    # A message was deleted since its sending time was read: ask again.
                    self._hooks.forget()
                    return self._write(judged, check=True)
        except BaseException:
            self.close()
            raise
        finally:
            self.touched()  # the ids of this batch's views mean nothing once it is written

    def record(self, views: Sequence[ViewIn], verdicts: Sequence[Judged] | None = None
               ) -> int:
        """:meth:`write` for views with their verdicts (default: human)."""
        return self.write(list(zip(views, verdicts or [_HUMAN] * len(views), strict=True)))

    def connection(self) -> Connection:
        """The connection batches are written on (opened again when it was dropped, or
        idle for a while): for the click writer, which shares it."""
        return self._connection()[0]

    def touched(self) -> None:
        """Note that the connection was just used (it is replaced after a while idle), and
        that the batch resolved last is written."""
        self._used_at = time.monotonic()
        self._whose.clear()

    def _connection(self) -> tuple[Connection, _Writer]:
        if (self._conn is None or self._conn.invalidated or self._conn.closed
                or time.monotonic() - self._used_at > self.idle_reconnect):
            self.close()  # back to the pool, whose pre-ping checks it before it is reused
            self._conn = self.store.db.engine.connect()
        if self._writer is None:
            self._writer = _Writer(self._conn.dialect)
        return self._conn, self._writer

    def _targets(self, conn: Connection, views: Sequence[ViewIn]
                 ) -> dict[tuple[int, int], Target]:
        """Targets keyed by (copy key, message id): (key, 0) for a copy's token, (0, id)
        for an older message token."""
        known = self._sent
        if time.monotonic() - self._sent_since > _SENT_CACHE_SECONDS:
            known.clear()
            self._sent_since = time.monotonic()
        wanted = {(v.copy_key, 0 if v.copy_key else v.message_id) for v in views}
        found = {k: known[k] for k in wanted if k in known}
        missing = wanted.difference(found)
        if missing:
            keys = sorted(k for k, _ in missing if k)
            ids = sorted(m for k, m in missing if not k)
            with conn.begin():
                if keys:
                    for key, cid, mid, position, at, pixel, rkey, box in conn.execute(
                            _BY_KEY, {"keys": keys}):
                        found[key, 0] = (cid, mid, position, at, pixel, rkey, box)
                if ids:
                    for mid, cid, at, pixel in conn.execute(_BY_MESSAGE, {"ids": ids}):
                        found[0, mid] = (cid, mid, 0, at, pixel or "none", None, 0)
            for k in missing:
                target = found.get(k)
                if target is not None and target[3] is not None:
                    # A sending time never changes once set; one still to come is looked
                    # up again.
                    if len(known) >= _SENT_CACHE_SIZE:
                        known.clear()
                    known[k] = target
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
        conn, _ = self._connection()
        with conn.begin():
            keep = self.still_allowed(conn, judged)
            if check:
                ids = sorted({v.message_id for v, _ in keep})
                existing = {mid for mid, _ in conn.execute(_SENT, {"ids": ids})}
                keep = [(v, j) for v, j in keep if v.message_id in existing]
                self._sent.clear()
            if not keep:
                return 0
            return self.append(conn, keep)

    def append(self, conn: Connection, keep: Sequence[tuple[ViewIn, Judged]]) -> int:
        """Append judged views of existing messages and update the summaries, in the
        transaction open on ``conn`` (this writer's own; the click writer adds the views a
        click implies in its transaction)."""
        writer = self._writer
        assert writer is not None  # set when the connection was opened
        time_of, headers_json = writer.time, self._headers_json
        rows: list[tuple[Any, ...]] = []
        # [first, last, how many] per (message, copy, its position, verdict): one dict
        # lookup a view.
        summary: dict[tuple[int, int | None, int, str], list[Any]] = {}
        for v, j in keep:
            at = time_of(v.at)  # as stored: bound times of one dialect compare correctly
            if v.anonymous:  # counted, nothing kept that could point to a person
                rows.append((v.message_id, 0, v.copy_id, at, v.method, None, None, "{}",
                             j.verdict, j.reason, j.client))
            else:
                rows.append((v.message_id, v.recipient, v.copy_id, at, v.method, v.ip,
                             v.user_agent, headers_json(v.headers), j.verdict, j.reason,
                             j.client))
            key = (v.message_id, v.copy_id, v.recipient, j.verdict)
            entry = summary.get(key)
            if entry is None:
                summary[key] = [at, at, 1]
            else:
                if at < entry[0]:
                    entry[0] = at
                if at > entry[1]:
                    entry[1] = at
                entry[2] += 1
        by_message: dict[tuple[int, str], list[Any]] = {}
        copy_summary: dict[tuple[int, str], list[Any]] = {}
        seen_copies: set[int] = set()  # messages whose personal copies a person viewed
        for (mid, cid, position, verdict), entry in summary.items():
            _merge(by_message, (mid, verdict), entry)
            if cid is not None:
                copy_summary[cid, verdict] = entry
                if position and verdict == "human":
                    seen_copies.add(mid)
        _executemany(conn, writer.insert, rows)
        # Copies before messages, each in id order: concurrent writers lock rows in the
        # same order.
        for table, statements in ((copy_summary, writer.copy_summary),
                                  (by_message, writer.summary)):
            for verdict, statement in statements.items():
                updates = [(n, first, last, last, rid)
                           for (rid, kind), (first, last, n) in sorted(table.items())
                           if kind == verdict]
                if updates:
                    _executemany(conn, statement, updates)
        if seen_copies:
            _executemany(conn, writer.viewed_copies, [(m,) for m in sorted(seen_copies)])
        hooks = self._hooks
        if hooks.version < 0:  # written without resolving first (imports, tests)
            self._gate.refresh(conn)
            hooks.refresh(conn, self._gate.version)
        if hooks.subscribers:  # events beside the views, only when an endpoint asks
            hooks.write(conn, lambda events: _executemany(conn, writer.hook_insert, events),
                        keep, [row[3] for row in rows])
        return len(keep)


def _merge(summary: dict[tuple[int, str], list[Any]], key: tuple[int, str],
           entry: list[Any]) -> None:
    """Add one [first, last, how many] into a row's summary."""
    found = summary.get(key)
    if found is None:
        summary[key] = list(entry)
    else:
        found[0], found[1] = min(found[0], entry[0]), max(found[1], entry[1])
        found[2] += entry[2]


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
                select(ViewEvent, func.coalesce(Copy.sent_at, Message.sent_at))
                .join(Message, Message.id == ViewEvent.message_id)
                .outerjoin(Copy, Copy.id == ViewEvent.copy_id)
                .where(ViewEvent.id > after_id).order_by(ViewEvent.id).limit(limit)).all()
            return [(e.id, ViewIn(e.message_id, e.recipient, e.at, e.method, e.ip,
                                  e.user_agent, json.loads(e.headers_json),
                                  copy_id=e.copy_id),
                     sent_at, Judged(e.verdict, e.reason, e.client))
                    for e, sent_at in rows]

    def set_verdicts(self, verdicts: Sequence[tuple[int, Judged]]) -> None:
        """Give stored views new verdicts (by view id); :meth:`rebuild_summaries` after."""
        with self._tx() as s:
            for view_id, j in verdicts:
                s.execute(update(ViewEvent).where(ViewEvent.id == view_id).values(
                    verdict=j.verdict, reason=j.reason, client=j.client))

    def rebuild_summaries(self) -> None:
        """Re-derive every message's and copy's view summary from its events, where the
        events still account for every view counted: the views of an erased recipient are
        deleted, and a purged view no longer names its copy, while their counts stay."""
        with self._tx() as s:
            self._rebuild_summaries(s)

    def _rebuild_summaries(self, s: Session) -> None:
        def agg(fn: Any, verdict: str) -> Any:
            return (select(fn).where(ViewEvent.message_id == Message.id,
                                     ViewEvent.verdict == verdict).scalar_subquery())

        def copy_agg(fn: Any, verdict: str) -> Any:
            return (select(fn).where(ViewEvent.copy_id == Copy.id,
                                     ViewEvent.verdict == verdict).scalar_subquery())

        # Reclassifying moves views between human and machine; it never changes how many.
        copy_backed = (Copy.view_count + Copy.machine_count == select(func.count()).where(
            ViewEvent.copy_id == Copy.id).scalar_subquery())
        message_backed = (Message.view_count + Message.machine_count == select(
            func.count()).where(ViewEvent.message_id == Message.id).scalar_subquery())
        s.execute(update(Copy).where(copy_backed).values(
            view_count=copy_agg(func.count(), "human"),
            first_viewed_at=copy_agg(func.min(ViewEvent.at), "human"),
            last_viewed_at=copy_agg(func.max(ViewEvent.at), "human"),
            machine_count=copy_agg(func.count(), "machine"),
            first_machine_at=copy_agg(func.min(ViewEvent.at), "machine"),
            last_machine_at=copy_agg(func.max(ViewEvent.at), "machine"),
        ))
        s.execute(update(Message).values(viewed_copies=viewed_copies()))
        s.execute(update(Message).where(message_backed).values(
            view_count=agg(func.count(), "human"),
            first_viewed_at=agg(func.min(ViewEvent.at), "human"),
            last_viewed_at=agg(func.max(ViewEvent.at), "human"),
            machine_count=agg(func.count(), "machine"),
            first_machine_at=agg(func.min(ViewEvent.at), "machine"),
            last_machine_at=agg(func.max(ViewEvent.at), "machine"),
        ))
