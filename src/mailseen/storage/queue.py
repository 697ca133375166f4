"""The delivery queue, kept in the copies table; each message's status sums up its copies'."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, bindparam, case, func, or_, select, update
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..records import Claim, CopyRecord, Outcome, Queued, Splice
from .base import StoreBase, copy_record, mailbox_record, translated
from .models import Copy, Mailbox, Message, MessageData
from .views import _naive_utc, _sqlite_time
from .webhooks import status_events, takes_status

T = TypeVar("T")

# When every due message is locked by other workers' claims: how often to look again, and
# how long to pause before each look (at most a quarter of a second in all).
_LOCKED_TRIES = 50
_LOCKED_PAUSE = 0.005

# The statuses of messages still in the queue or needing attention (not "sent"), and the
# query that counts them: a range of an index that starts with the status.
PENDING = ("queued", "sending", "failed")
PENDING_COUNTS = (select(Message.status, func.count()).where(Message.status.in_(PENDING))
                  .group_by(Message.status))


# What settling reads of a message's copies, by status: how many, the first sending time, the
# most attempts, the next due attempt, and the last copy (by position) with an error. Built
# once: the worker settles a message for every copy it delivers.
_SUMMARY = (select(Copy.status, func.count(), func.min(Copy.sent_at), func.max(Copy.attempts),
                   func.min(Copy.next_attempt_at),
                   func.max(case((Copy.last_error.is_not(None), Copy.position))))
            .where(Copy.message_id == bindparam("mid")).group_by(Copy.status))
_ERROR_AT = select(Copy.last_error).where(Copy.message_id == bindparam("mid"),
                                          Copy.position == bindparam("pos"))
_SETTLE = update(Message).where(Message.id == bindparam("mid")).values(
    status=bindparam("v_status"), sent_at=bindparam("v_sent_at"),
    next_attempt_at=bindparam("v_waiting"), attempts=bindparam("v_attempts"),
    last_error=bindparam("v_error"), lease_until=None, failed_copies=bindparam("v_failed"))
_LOCK_MESSAGE = select(Message.id).where(Message.id == bindparam("mid")).with_for_update()


class _Statements:
    """What :meth:`QueueStore.advance` runs for every copy delivered, as plain SQL in the
    driver's placeholder style, with times bound as UTCDateTime binds them: SQLAlchemy's
    per-statement work (compiling, parameter processing) cost more CPU than the database's
    (as for the pixel writer, storage/views.py)."""

    def __init__(self, dialect: Dialect) -> None:
        def native(sql: str) -> str:
            return sql if dialect.paramstyle == "qmark" else sql.replace("?", "%s")

        self.native = native
        # lease_until, id, reserved until
        self.start_copy = native(_START_COPY)
        self.start_message = native(
            "UPDATE messages SET status = 'sending' WHERE id = ? AND status = 'queued'")
        # last_error, last_attempt_at, next_attempt_at[, sent_at], id
        self.record = {status: native(_record_copy(status)) for status in _OUTCOMES}
        self.settle_alone = native(_SETTLE_ALONE + "id = ?")  # _SETTLE_ALONE's, the id
        self._fused: dict[tuple[str | None, bool], str] = {}
        self.time = _sqlite_time if dialect.name == "sqlite" else _naive_utc
        self.read_time = _read_sqlite_time if dialect.name == "sqlite" else _read_utc
        # What a batch's claims read, by how many ids they ask for: the copies, and their
        # messages with their stored bytes, splice and number of copies.
        self.claimed_copies = _ByCount(native(
            f"SELECT {', '.join(_CLAIMED_COPY)} FROM copies WHERE id IN ({{}})"), native("?"))
        self.claimed_messages = _ByCount(native(
            "SELECT m.id, m.mailbox_id, m.created_at, m.envelope_json, m.clicks_tracked, "
            "d.raw, d.splice_start, d.splice_end, d.splice_insert, d.splice_key, "
            "(SELECT count(*) FROM copies c WHERE c.message_id = m.id) "
            "FROM messages m JOIN message_data d ON d.message_id = m.id WHERE m.id IN ({})"),
            native("?"))

    def fused(self, status: str | None, start: bool) -> str:
        """PostgreSQL: one statement recording how a message's only copy ended (with
        ``status``; None: nothing to record) and starting the next copy (``start``),
        giving how many copies it started: one round trip rather than four. Its parts
        cannot see each other's changes, so each part's condition names the rows the part
        before changed (RETURNING) where the statements run in turn check them again."""
        key = (status, start)
        found = self._fused.get(key)
        if found is None:
            parts = []
            if status is not None:
                parts += [f"recorded AS ({_record_copy(status)} RETURNING message_id)",
                          f"settled AS ({_SETTLE_ALONE}id IN "
                          "(SELECT message_id FROM recorded))"]
            if start:
                parts += [f"started AS ({_START_COPY} RETURNING message_id)",
                          "begun AS (UPDATE messages SET status = 'sending' WHERE id IN "
                          "(SELECT message_id FROM started) AND status = 'queued')"]
            found = self._fused[key] = self.native(
                "WITH " + ", ".join(parts)
                + (" SELECT count(*) FROM started" if start else " SELECT 0"))
        return found


# The statements QueueStore.advance runs for each copy, in the driver's style once native.
_OUTCOMES = ("sent", "queued", "failed")
_START_COPY = ("UPDATE copies SET status = 'sending', lease_until = ?, "
               "attempts = attempts + 1 WHERE id = ? AND status = 'queued' AND lease_until = ?")
# status, sent_at, next_attempt_at, attempts, last_error, failed_copies; then which message
_SETTLE_ALONE = ("UPDATE messages SET status = ?, sent_at = ?, next_attempt_at = ?, "
                 "attempts = ?, last_error = ?, lease_until = NULL, failed_copies = ? WHERE ")


def _record_copy(status: str) -> str:
    return (f"UPDATE copies SET status = '{status}', last_error = ?, lease_until = NULL, "
            "last_attempt_at = ?, next_attempt_at = ?"
            + (", sent_at = ?" if status == "sent" else "") + " WHERE id = ?")


class _ByCount:
    """A statement with an IN list, built once for each length of list."""

    def __init__(self, template: str, mark: str) -> None:
        self.template = template
        self.mark = mark  # the driver's placeholder
        self.built: dict[int, str] = {}

    def __call__(self, count: int) -> str:
        found = self.built.get(count)
        if found is None:
            found = self.built[count] = self.template.format(", ".join([self.mark] * count))
        return found


# A claimed copy's columns, in the order records.CopyRecord is made from them.
_CLAIMED_COPY = ("id", "message_id", "position", "recipient", "token_key", "pixel", "reason",
                 "envelope_json", "status", "attempts", "last_error", "next_attempt_at",
                 "sent_at")


def _read_sqlite_time(value: str | None) -> datetime | None:
    """A time as SQLite keeps it (UTCDateTime's text) as the aware time it stands for."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _read_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _run(conn: Connection, statement: str, params: Sequence[Any]) -> int:
    """One statement through the driver (as views.py's ``_executemany``), its driver errors
    wrapped as SQLAlchemy wraps them; returns the rows it changed."""
    return _driver(conn, statement, params, lambda cursor: int(cursor.rowcount))


def _rows(conn: Connection, statement: str, params: Sequence[Any]) -> list[Any]:
    """The rows a query through the driver gives (as :func:`_run`)."""
    return _driver(conn, statement, params, lambda cursor: list(cursor.fetchall()))


def _driver(conn: Connection, statement: str, params: Sequence[Any],
            result: Callable[[Any], T]) -> T:
    cursor = conn.connection.cursor()
    try:
        cursor.execute(statement, params)
        return result(cursor)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(statement, params, exc, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect) from exc
    finally:
        cursor.close()


def settle(s: Session, message_id: int) -> None:
    """Bring a message's status in line with its copies': waiting while any copy waits,
    sent once any copy was accepted and none waits, else failed (or cancelled when every
    copy was withdrawn). Its sending time is its first copy's."""
    _settle(s.connection(), message_id)


def _settle(conn: Connection, message_id: int) -> None:
    rows = conn.execute(_SUMMARY, {"mid": message_id}).all()
    counts = {status: n for status, n, *_ in rows}
    sent_times = [at for _, _, at, *_ in rows if at is not None]
    attempts = max((a for _, _, _, a, *_ in rows), default=0)
    if counts.get("sending"):
        status = "sending"
    elif counts.get("queued"):
        status = "queued"
    elif counts.get("sent"):
        status = "sent"
    elif set(counts) == {"cancelled"}:
        status = "cancelled"
    else:
        status = "failed"
    waiting = next((due for st, _, _, _, due, _ in rows if st == "queued"), None)
    with_error = max((pos for *_, pos in rows if pos is not None), default=None)
    last_error = None if with_error is None else conn.execute(
        _ERROR_AT, {"mid": message_id, "pos": with_error}).scalar()
    conn.execute(_SETTLE, {
        "mid": message_id, "v_status": status,
        "v_sent_at": min(sent_times) if sent_times else None, "v_waiting": waiting,
        "v_attempts": attempts, "v_error": last_error,
        "v_failed": counts.get("failed", 0) + counts.get("bounced", 0)})


def _next_attempts(s: Session, message_ids: Select[tuple[int]]) -> None:
    """Bring the messages' next attempt in line with their waiting copies' (as
    :func:`settle` does) after those were moved."""
    s.execute(update(Message).where(Message.id.in_(message_ids.scalar_subquery())).values(
        next_attempt_at=select(func.min(Copy.next_attempt_at)).where(
            Copy.message_id == Message.id, Copy.status == "queued").scalar_subquery()))


def _recorded(sql: _Statements, done: Outcome, now: datetime
              ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """What records how the attempt at a copy ended: the values of the copy's new state,
    and of its message's had it no other copy (what settling would make of that one
    copy, without reading it back)."""
    at = sql.time(now)
    retry_at = (sql.time(done.retry_at) if done.status == "queued"
                and done.retry_at is not None else None)
    record: tuple[Any, ...] = (done.note, at, retry_at, at, done.copy_id) if (
        done.status == "sent") else (done.note, at, retry_at, done.copy_id)
    return record, (done.status, at if done.status == "sent" else None, retry_at,
                    done.attempts, done.note, int(done.status == "failed"))


class Lane:
    """One connection kept for a run of :meth:`QueueStore.advance` calls, opened when first
    used. Not for two threads at once: the calls of a run come one after the other."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self._conn: Connection | None = None

    def connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.store.db.engine.connect()
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                conn.close()


_copies = cast(Table, Copy.__table__)
_messages = cast(Table, Message.__table__)
_mailboxes = cast(Table, Mailbox.__table__)

def _queued(row: Any) -> Queued:
    return Queued(row.id, row.mailbox_id, row.created_at, json.loads(row.envelope_json),
                  row.clicks_tracked)


def _splice(row: Any) -> Splice | None:
    if row.splice_key is None:
        return None
    return Splice(row.splice_start, row.splice_end, row.splice_insert, row.splice_key)


# Delivery outcomes a webhook may tell of (storage/webhooks.py says which event).
_EVENTFUL = ("sent", "failed")


class QueueStore(StoreBase):
    _statements: _Statements | None = None  # built on first use, for the engine's dialect

    def claim_next(self, lease: timedelta) -> Claim | None:
        """Claim one due copy for delivery, or None. Safe with many workers: the claim
        is a conditional UPDATE whose row count says who won. A claim whose worker died is
        taken over once its lease has run out. None means nothing is due, or all that is due
        has been locked by other sessions for a quarter of a second: a claim that loses a race
        tries the next copy (every lost race is another worker's win, so this ends), and
        one that finds every due copy being claimed waits for those claims, rather than
        tell a worker the queue is empty while it is not."""
        t = self.clock.now()
        waited = 0
        due = or_(
            (Copy.status == "queued") & (Copy.next_attempt_at <= t),
            (Copy.status == "sending") & (Copy.lease_until < t),
        )
        while True:
            if waited:
                time.sleep(_LOCKED_PAUSE)  # outside any transaction
            with self._tx() as s:
                # On PostgreSQL, rows another worker is claiming right now are skipped rather
                # than waited for and then lost (SQLite has one writer and ignores this).
                candidate = s.scalar(select(Copy.id).where(due)
                                     .order_by(Copy.next_attempt_at, Copy.id).limit(1)
                                     .with_for_update(skip_locked=True))
                if candidate is None:
                    if s.scalar(select(Copy.id).where(due).limit(1)) is None:
                        return None  # nothing is due
                    # Every due copy is locked: other workers' claims, done in
                    # milliseconds. Wait for them a little; a lock held far longer (a stalled
                    # session) is not worth spinning on: the worker polls again later.
                    waited += 1
                    if waited > _LOCKED_TRIES:
                        return None
                    continue
                result = s.execute(
                    update(Copy).where(Copy.id == candidate, due).values(
                        status="sending", lease_until=t + lease, attempts=Copy.attempts + 1))
                if not cast(CursorResult[Any], result).rowcount:
                    continue  # another worker won this one
                copy = s.get(Copy, candidate)
                assert copy is not None
                s.refresh(copy)
                s.execute(update(Message).where(Message.id == copy.message_id,
                                                Message.status == "queued")
                          .values(status="sending"))
                row = s.get(Message, copy.message_id)
                assert row is not None
                s.refresh(row)
                box = s.get(Mailbox, row.mailbox_id)
                data = s.get(MessageData, row.id)
                assert box is not None and data is not None
                password = (self.cipher.decrypt(box.smtp_password_enc)
                            if box.smtp_password_enc else None)
                return Claim(_queued(row), copy_record(copy), data.raw,
                             mailbox_record(box), password, splice=_splice(data))

    def reserve(self, limit: int, lease: timedelta) -> list[Claim]:
        """Reserve up to ``limit`` due copies for one worker, oldest due first, each with
        what its transport needs (a message's bytes and mailbox read once for all its
        copies). A reserved copy stays queued, and no attempt is counted, until
        :meth:`advance` starts it; nobody else takes it until ``lease`` runs out (its worker
        died), nor after :meth:`release`. Empty means nothing is due, or everything due is
        being claimed by other sessions for longer than a quarter of a second (as
        :meth:`claim_next`)."""
        t = self.clock.now()
        until = t + lease
        due = or_(
            (Copy.status == "queued") & (Copy.next_attempt_at <= t)
            & (Copy.lease_until.is_(None) | (Copy.lease_until < t)),
            (Copy.status == "sending") & (Copy.lease_until < t),
        )
        waited = 0
        while True:
            if waited:
                time.sleep(_LOCKED_PAUSE)  # outside any transaction
            with self._tx() as s:
                ids = list(s.scalars(select(Copy.id).where(due)
                                     .order_by(Copy.next_attempt_at, Copy.id).limit(limit)
                                     .with_for_update(skip_locked=True)))
                if not ids:
                    if s.scalar(select(Copy.id).where(due).limit(1)) is None:
                        return []
                    waited += 1
                    if waited > _LOCKED_TRIES:
                        return []
                    continue
                # A copy whose worker died while sending it is queued again: its next
                # start counts another attempt, as a claim does.
                won = set(s.scalars(update(Copy).where(Copy.id.in_(ids), due)
                                    .values(status="queued", lease_until=until)
                                    .returning(Copy.id)))
                if not won:
                    continue
                return self._claims(s, [i for i in ids if i in won], until)

    def _claims(self, s: Session, ids: list[int], until: datetime) -> list[Claim]:
        # Plain rows through the driver, not ORM objects nor SQLAlchemy's result rows (this
        # runs for every copy delivered): the records are all the worker wants; a batch's
        # messages and mailboxes are read once for all their copies, and of a message only
        # what delivering it needs.
        conn = s.connection()
        sql = self._sql(conn)
        copies = {row[0]: row for row in _rows(conn, sql.claimed_copies(len(ids)), ids)}
        message_ids = sorted({row[1] for row in copies.values()})
        messages = {row[0]: row for row in _rows(
            conn, sql.claimed_messages(len(message_ids)), message_ids)}
        boxes = {b.id: b for b in s.execute(select(_mailboxes).where(_mailboxes.c.id.in_(
            {m[1] for m in messages.values()})))}
        passwords = {b.id: self.cipher.decrypt(b.smtp_password_enc)
                     if b.smtp_password_enc else None for b in boxes.values()}
        mailboxes = {b.id: mailbox_record(b) for b in boxes.values()}
        read = sql.read_time
        made: dict[int, tuple[Queued, bytes, Splice | None, bool]] = {}
        for (mid, box, created, envelope, clicks, raw, start, end, insert, key,
             count) in messages.values():
            made[mid] = (Queued(mid, box, cast(datetime, read(created)), json.loads(envelope),
                                bool(clicks)), bytes(raw),
                         None if key is None else Splice(start, end, bytes(insert), key),
                         count == 1)
        out = []
        for i in ids:
            (_, mid, position, recipient, token_key, pixel, reason, envelope, status,
             attempts, error, due, sent) = copies[i]
            msg, raw, splice, alone = made[mid]
            copy = CopyRecord(position, recipient, token_key, pixel=pixel, reason=reason,
                              envelope=tuple(json.loads(envelope)) if envelope else None,
                              id=i, message_id=mid, status=status, attempts=attempts,
                              last_error=error, next_attempt_at=read(due), sent_at=read(sent))
            out.append(Claim(msg, copy, raw, mailboxes[msg.mailbox_id],
                             passwords[msg.mailbox_id], until, alone, splice))
        return out

    def _sql(self, conn: Connection) -> _Statements:
        sql = self._statements
        if sql is None:
            sql = self._statements = _Statements(conn.dialect)
        return sql

    def advance(self, done: Outcome | None, start: Claim | None, lease: timedelta,
                lane: Lane | None = None) -> bool:
        """In one transaction, record how the attempt at a copy ended (``done``) and start
        the next reserved copy (``start``): marked as being sent, one attempt more, its
        lease from now. The next one is started only once the last is recorded, so a worker
        killed at any moment has at most the copy in hand sent and not recorded. Returns
        whether ``start`` was started: False when it is no longer this worker's (cancelled
        or retried by an admin, deleted, or taken over after its reservation ran out).
        ``lane``: a connection kept for one worker's run of copies (see :meth:`lane`); the
        call without ``start`` that ends the run gives it back."""
        own = lane is None  # a connection for this call alone
        if lane is None:
            lane = Lane(self)
        if done is None and start is None:
            lane.close()
            return False
        try:
            with translated(self.db):
                conn = lane.connection()
                simple = not self.db.is_sqlite and self._simple(conn, done)
                if conn.in_transaction():  # the webhook check read its endpoints
                    conn.commit()
                if simple:
                    return self._advance_at_once(conn, done, start, lease)
                with conn.begin():
                    return self._advance(conn, done, start, lease)
        except BaseException:
            lane.close()  # a failed connection is not used again
            raise
        finally:
            if own or start is None:
                lane.close()

    def lane(self) -> Lane:
        """A connection for one run of :meth:`advance` calls, made one after the other
        (from any thread): taking a connection from the pool (and PostgreSQL's check of it)
        once per run rather than once per copy. Closed by the call without a copy to
        start, or :meth:`Lane.close`."""
        return Lane(self)

    def _advance(self, conn: Connection, done: Outcome | None, start: Claim | None,
                 lease: timedelta) -> bool:
        # Plain SQL on a connection rather than an ORM session: nothing here needs more,
        # and this runs once for every copy delivered.
        sql = self._sql(conn)
        starting = self._starting(sql, start, lease)
        if done is not None:
            self._record(conn, sql, done)
        if start is None:
            return False
        if not _run(conn, sql.start_copy, starting):
            return False
        _run(conn, sql.start_message, (start.message.id,))
        return True

    def _simple(self, conn: Connection, done: Outcome | None) -> bool:
        """Whether recording ``done`` reads nothing back: a message's only copy, and no
        webhook endpoint to tell of it."""
        return done is None or (done.alone and not (
            done.status in _EVENTFUL and takes_status(conn, done.status)))

    def _starting(self, sql: _Statements, start: Claim | None, lease: timedelta
                  ) -> tuple[Any, ...]:
        """The values starting ``start`` takes: its lease, its id, its reservation."""
        if start is None:
            return ()
        assert start.reserved_until is not None  # a reserved claim
        return (sql.time(self.clock.now() + lease), start.copy.id,
                sql.time(start.reserved_until))

    def _advance_at_once(self, conn: Connection, done: Outcome | None, start: Claim | None,
                         lease: timedelta) -> bool:
        """PostgreSQL, the common case (:meth:`_simple`): everything as one statement, its
        own transaction (no BEGIN, no COMMIT: one round trip, where each is a wait between
        the relay's 354 and the message)."""
        sql = self._sql(conn)
        values: tuple[Any, ...] = ()
        if done is not None:
            record, settled = _recorded(sql, done, self.clock.now())
            values = record + settled
        statement = sql.fused(None if done is None else done.status, start is not None)
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.autocommit = True  # psycopg: no BEGIN before it; it commits by itself
        try:
            return bool(_rows(conn, statement, values + self._starting(sql, start, lease))[0][0])
        finally:
            if not driver.closed and not driver.broken:  # a lost one is not used again
                driver.autocommit = False

    def release(self, claims: Sequence[Claim], at: datetime | None = None) -> None:
        """Give back reserved copies that were not started: due again at once, or at ``at``
        (their relay asked for a pause)."""
        reservations: dict[datetime | None, list[int]] = {}
        for claim in claims:
            reservations.setdefault(claim.reserved_until, []).append(claim.copy.id)
        values: dict[str, Any] = {"lease_until": None}
        if at is not None:
            values["next_attempt_at"] = at
        with self._tx() as s:
            for until, ids in reservations.items():
                s.execute(update(Copy).where(Copy.id.in_(ids), Copy.status == "queued",
                                             Copy.lease_until == until).values(**values))
            if at is not None:
                _next_attempts(s, select(Copy.message_id).where(
                    Copy.id.in_([c.copy.id for c in claims])))

    def postpone_relay(self, host: str, port: int | None, until: datetime) -> int:
        """Hold back every waiting copy (not reserved) of the mailboxes that use the relay
        at ``host`` and ``port`` until ``until``: the relay is failing or throttling, and
        whoever works the queue should leave it alone until then. An admin's retry still
        queues a copy for now. Returns how many were held back."""
        boxes = select(Mailbox.id).where(Mailbox.transport == "smtp",
                                         Mailbox.smtp_host == host,
                                         Mailbox.smtp_port.is_(None) if port is None
                                         else Mailbox.smtp_port == port)
        messages = select(Message.id).where(Message.mailbox_id.in_(boxes),
                                            Message.status.in_(("queued", "sending")))
        held = (Copy.message_id.in_(messages), Copy.status == "queued",
                Copy.next_attempt_at < until, Copy.lease_until.is_(None))
        with self._tx() as s:
            ids = list(s.scalars(select(Copy.message_id).where(*held)))
            if not ids:
                return 0
            result = s.execute(update(Copy).where(*held).values(next_attempt_at=until))
            _next_attempts(s, select(Copy.message_id).where(Copy.message_id.in_(ids)))
            return cast(CursorResult[Any], result).rowcount

    def _record(self, conn: Connection, sql: _Statements, done: Outcome) -> None:
        if (self._record_status(conn, sql, done) and done.status in _EVENTFUL
                and takes_status(conn, done.status)):
            # Webhooks: in the same transaction, and only when an endpoint takes them.
            with Session(bind=conn) as s:
                status_events(s, done.status, [done.copy_id], self.clock.now())
                s.flush()

    def _record_status(self, conn: Connection, sql: _Statements, done: Outcome) -> bool:
        """Record how a copy's delivery ended; False when the copy is gone."""
        record, settled = _recorded(sql, done, self.clock.now())
        if not _run(conn, sql.record[done.status], record):
            return False  # deleted meanwhile
        if done.alone:
            _run(conn, sql.settle_alone, (*settled, done.message_id))
            return True
        # One settling at a time per message (see _finish_in); SQLite has one writer.
        if not self.db.is_sqlite:
            conn.execute(_LOCK_MESSAGE, {"mid": done.message_id})
        _settle(conn, done.message_id)
        return True

    def _finish(self, copy_id: int, **values: Any) -> None:
        with self._tx() as s:
            self._finish_in(s, copy_id, **values)

    def _finish_in(self, s: Session, copy_id: int, **values: Any) -> None:
        message_id = s.scalar(select(Copy.message_id).where(Copy.id == copy_id))
        if message_id is None:
            return  # deleted meanwhile
        s.execute(update(Copy).where(Copy.id == copy_id).values(
            lease_until=None, last_attempt_at=self.clock.now(), **values))
        # One settling at a time per message: two workers finishing two copies at once
        # would each read the other's copy as still being sent. Rows are locked copy
        # first, then message, as a claim does.
        s.execute(select(Message.id).where(Message.id == message_id).with_for_update())
        settle(s, message_id)
        status_events(s, values["status"], [copy_id], self.clock.now())  # webhooks

    def mark_sent(self, copy_id: int, note: str | None = None) -> None:
        self._finish(copy_id, status="sent", sent_at=self.clock.now(), next_attempt_at=None,
                     last_error=note)

    def mark_retry(self, copy_id: int, error: str, at: datetime) -> None:
        self._finish(copy_id, status="queued", next_attempt_at=at, last_error=error)

    def mark_failed(self, copy_id: int, error: str) -> None:
        self._finish(copy_id, status="failed", next_attempt_at=None, last_error=error)

    def fail_message(self, message_id: int, error: str) -> None:
        """Mark every copy of a message failed: it never left (the ``tag`` filter could not
        write it out)."""
        with self._tx() as s:
            s.execute(select(Message.id).where(Message.id == message_id).with_for_update())
            s.execute(update(Copy).where(Copy.message_id == message_id).values(
                status="failed", next_attempt_at=None, lease_until=None, last_error=error))
            if s.scalar(select(Copy.id).where(Copy.message_id == message_id).limit(1)) is None:
                s.add(Copy(message_id=message_id, position=0, status="failed", attempts=0,
                           last_error=error, view_count=0, machine_count=0))
                s.flush()
            settle(s, message_id)
            status_events(s, "failed", list(s.scalars(select(Copy.id).where(  # webhooks
                Copy.message_id == message_id))), self.clock.now())

    def retry_now(self, copy_ids: Sequence[int]) -> int:
        """Queue failed or waiting copies for an attempt now (an admin's
        "retry"): attempts start again. Returns how many were queued."""
        return self._requeue(copy_ids, ("queued", "failed"),
                             {"status": "queued", "next_attempt_at": self.clock.now(),
                              "attempts": 0})

    def cancel(self, copy_ids: Sequence[int]) -> int:
        """Withdraw waiting or failed copies: they will not be sent. Returns how many."""
        return self._requeue(copy_ids, ("queued", "failed"),
                             {"status": "cancelled", "next_attempt_at": None})

    def _requeue(self, copy_ids: Sequence[int], allowed: tuple[str, ...],
                 values: dict[str, Any]) -> int:
        with self._tx() as s:
            ids = list(s.scalars(select(Copy.id).where(Copy.id.in_(copy_ids),
                                                       Copy.status.in_(allowed))))
            if not ids:
                return 0
            s.execute(update(Copy).where(Copy.id.in_(ids)).values(lease_until=None, **values))
            for mid in sorted(set(s.scalars(select(Copy.message_id)
                                            .where(Copy.id.in_(ids))))):
                s.execute(select(Message.id).where(Message.id == mid).with_for_update())
                settle(s, mid)
            return len(ids)

    def queue_counts(self) -> dict[str, int]:
        """Outbound messages by status, sent ones included (a count of every message)."""
        with self._tx() as s:
            rows = s.execute(select(Message.status, func.count())
                             .where(Message.direction == "out").group_by(Message.status))
            return {status: count for status, count in rows}

    def delivery_trouble(self, mailbox_ids: Sequence[int]
                         ) -> dict[int, tuple[str, datetime]]:
        """The mailboxes whose latest delivery attempt failed (their relay is failing now),
        each with the error and when: {mailbox id: (error, at)}."""
        found: dict[int, tuple[str, datetime]] = {}
        with self._tx() as s:
            for mailbox_id in mailbox_ids:
                row = s.execute(
                    select(Copy.status, Copy.last_error, Copy.last_attempt_at)
                    .join(Message, Message.id == Copy.message_id)
                    .where(Message.mailbox_id == mailbox_id, Copy.last_attempt_at.is_not(None))
                    .order_by(Copy.last_attempt_at.desc()).limit(1)).first()
                if row is not None and row.status in ("queued", "failed") and row.last_error:
                    assert row.last_attempt_at is not None
                    found[mailbox_id] = (row.last_error, row.last_attempt_at)
        return found

    def pending_counts(self) -> dict[str, int]:
        """How many messages are queued, being sent, or failed: the queue's health. Each is
        a range of an index that starts with the status, so the cost does not grow with the
        messages already sent (the health check asks this, without a token, as often as anyone
        likes)."""
        with self._tx() as s:
            counted = dict(s.execute(PENDING_COUNTS).tuples().all())
        return {status: counted.get(status, 0) for status in PENDING}
