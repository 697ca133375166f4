"""Every database operation mailseen performs, as methods over plain records."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import case, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..errors import Conflict, NotFound, StorageUnavailable
from .db import Database
from .models import ApiToken, AppSetting, Mailbox, Message, MessageData, ViewEvent
from .records import MailboxIn, MailboxRecord, MessageRecord, NewMessage, ViewIn, ViewRecord

__all__ = ["Cipher", "Claim", "Rendered", "Store"]


def now() -> datetime:
    return datetime.now(UTC)


class Cipher(Protocol):
    def encrypt(self, plain: str) -> str: ...
    def decrypt(self, token: str) -> str: ...


@dataclass(frozen=True)
class Rendered:
    """What the send pipeline made of a message once its id was known."""

    raw: bytes
    tracked: bool
    reason: str


@dataclass(frozen=True)
class Claim:
    """A message claimed for delivery, with what the transport needs."""

    message: MessageRecord
    raw: bytes
    mailbox: MailboxRecord
    smtp_password: str | None


def _mailbox(row: Mailbox) -> MailboxRecord:
    return MailboxRecord(
        id=row.id, address=row.address, display_name=row.display_name,
        transport=row.transport,  # type: ignore[arg-type]
        smtp_host=row.smtp_host, smtp_port=row.smtp_port,
        smtp_tls=row.smtp_tls,  # type: ignore[arg-type]
        smtp_username=row.smtp_username, has_smtp_password=bool(row.smtp_password_enc),
        tracking=row.tracking,  # type: ignore[arg-type]
        created_at=row.created_at,
    )


def _message(row: Message) -> MessageRecord:
    return MessageRecord(
        id=row.id, mailbox_id=row.mailbox_id, message_id=row.message_id, subject=row.subject,
        from_addr=row.from_addr, to=json.loads(row.to_json), cc=json.loads(row.cc_json),
        bcc=json.loads(row.bcc_json), envelope_to=json.loads(row.envelope_json),
        in_reply_to=row.in_reply_to, references=row.references, source=row.source,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts, last_error=row.last_error, created_at=row.created_at,
        next_attempt_at=row.next_attempt_at, sent_at=row.sent_at, tracked=row.tracked,
        tracking_reason=row.tracking_reason, first_viewed_at=row.first_viewed_at,
        last_viewed_at=row.last_viewed_at, view_count=row.view_count,
    )


class Store:
    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.cipher = cipher

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        try:
            with self.db.session() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise StorageUnavailable(f"database unavailable: {exc.orig}") from exc

    # -- global settings ------------------------------------------------------------------

    def get_setting(self, key: str, default: str) -> str:
        with self._tx() as s:
            row = s.get(AppSetting, key)
            return default if row is None else row.value

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as s:
            row = s.get(AppSetting, key)
            if row is None:
                s.add(AppSetting(key=key, value=value))
            else:
                row.value = value

    # -- mailboxes ----------------------------------------------------------------------

    def add_mailbox(self, box: MailboxIn) -> MailboxRecord:
        row = Mailbox(created_at=now())
        self._apply_mailbox(row, box)
        try:
            with self._tx() as s:
                s.add(row)
                s.flush()
                return _mailbox(row)
        except IntegrityError as exc:
            raise Conflict(f"a mailbox {box.address} exists already") from exc

    def _apply_mailbox(self, row: Mailbox, box: MailboxIn) -> None:
        for f in fields(MailboxIn):
            if f.name == "smtp_password":
                continue
            setattr(row, f.name, getattr(box, f.name))
        if box.smtp_password is not None:
            row.smtp_password_enc = (self.cipher.encrypt(box.smtp_password)
                                     if box.smtp_password else None)

    def update_mailbox(self, mailbox_id: int, change: Callable[[MailboxIn], MailboxIn]
                       ) -> MailboxRecord:
        """Apply ``change`` to the mailbox's current values (password left out: None)."""
        with self._tx() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            current = MailboxIn(**{f.name: getattr(row, f.name) for f in fields(MailboxIn)
                                   if f.name != "smtp_password"})
            updated = change(current)
            if updated.address != row.address and s.scalar(
                    select(Mailbox.id).where(Mailbox.address == updated.address)) is not None:
                raise Conflict(f"a mailbox {updated.address} exists already")
            self._apply_mailbox(row, updated)
            s.flush()
            return _mailbox(row)

    def get_mailbox(self, mailbox_id: int) -> MailboxRecord:
        with self._tx() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            return _mailbox(row)

    def find_mailbox(self, address: str) -> MailboxRecord:
        with self._tx() as s:
            row = s.scalar(select(Mailbox).where(func.lower(Mailbox.address) == address.lower()))
            if row is None:
                raise NotFound(f"no mailbox {address}")
            return _mailbox(row)

    def list_mailboxes(self) -> list[MailboxRecord]:
        with self._tx() as s:
            return [_mailbox(r) for r in s.scalars(select(Mailbox).order_by(Mailbox.address))]

    # -- messages -----------------------------------------------------------------------

    def add_message(self, new: NewMessage, render: Callable[[int], Rendered],
                    queued: bool = True) -> MessageRecord:
        """Store a message and queue it, atomically. ``render`` gets the new row's id (the
        token needs it) and returns the bytes to deliver and the tracking decision. With
        ``queued=False`` the message is recorded as already sent (by other software)."""
        t = now()
        with self._tx() as s:
            row = Message(
                mailbox_id=new.mailbox_id, message_id=new.message_id, subject=new.subject,
                from_addr=new.from_addr, to_json=json.dumps(new.to), cc_json=json.dumps(new.cc),
                bcc_json=json.dumps(new.bcc), envelope_json=json.dumps(new.envelope_to),
                in_reply_to=new.in_reply_to, references=new.references, source=new.source,
                status="queued" if queued else "sent", attempts=0, created_at=t,
                next_attempt_at=t if queued else None, sent_at=None if queued else t,
                tracked=False, tracking_reason="", view_count=0,
            )
            s.add(row)
            s.flush()
            rendered = render(row.id)
            row.tracked = rendered.tracked
            row.tracking_reason = rendered.reason
            s.add(MessageData(message_id=row.id, raw=rendered.raw))
            s.flush()
            return _message(row)

    def get_message(self, message_id: int) -> MessageRecord:
        with self._tx() as s:
            row = s.get(Message, message_id)
            if row is None:
                raise NotFound(f"no message with id {message_id}")
            return _message(row)

    def get_raw(self, message_id: int) -> bytes:
        with self._tx() as s:
            row = s.get(MessageData, message_id)
            if row is None:
                raise NotFound(f"no message with id {message_id}")
            return row.raw

    def list_messages(self, *, mailbox_id: int | None = None, status: str | None = None,
                      limit: int = 50, before_id: int | None = None) -> list[MessageRecord]:
        q = select(Message).order_by(Message.id.desc()).limit(limit)
        if mailbox_id is not None:
            q = q.where(Message.mailbox_id == mailbox_id)
        if status is not None:
            q = q.where(Message.status == status)
        if before_id is not None:
            q = q.where(Message.id < before_id)
        with self._tx() as s:
            return [_message(r) for r in s.scalars(q)]

    def list_views(self, message_id: int, limit: int = 1000) -> list[ViewRecord]:
        q = (select(ViewEvent).where(ViewEvent.message_id == message_id)
             .order_by(ViewEvent.at, ViewEvent.id).limit(limit))
        with self._tx() as s:
            return [
                ViewRecord(id=r.id, message_id=r.message_id, recipient=r.recipient, at=r.at,
                           method=r.method, ip=r.ip, user_agent=r.user_agent,
                           headers=json.loads(r.headers_json))
                for r in s.scalars(q)
            ]

    # -- the delivery queue ---------------------------------------------------------------

    def claim_next(self, lease: timedelta) -> Claim | None:
        """Claim one due message for delivery, or None. Safe with many workers: the claim
        is a conditional UPDATE whose row count says who won. A claim whose worker died is
        taken over once its lease has run out."""
        t = now()
        due = or_(
            (Message.status == "queued") & (Message.next_attempt_at <= t),
            (Message.status == "sending") & (Message.lease_until < t),
        )
        for _ in range(5):
            with self._tx() as s:
                candidate = s.scalar(select(Message.id).where(due)
                                     .order_by(Message.next_attempt_at, Message.id).limit(1))
                if candidate is None:
                    return None
                result = s.execute(
                    update(Message).where(Message.id == candidate, due).values(
                        status="sending", lease_until=t + lease, attempts=Message.attempts + 1))
                won = cast(CursorResult[Any], result).rowcount
                if not won:
                    continue
                row = s.get(Message, candidate)
                assert row is not None
                s.refresh(row)
                box = s.get(Mailbox, row.mailbox_id)
                data = s.get(MessageData, row.id)
                assert box is not None and data is not None
                password = (self.cipher.decrypt(box.smtp_password_enc)
                            if box.smtp_password_enc else None)
                return Claim(_message(row), data.raw, _mailbox(box), password)
        return None

    def mark_sent(self, message_id: int, note: str | None = None) -> None:
        with self._tx() as s:
            s.execute(update(Message).where(Message.id == message_id).values(
                status="sent", sent_at=now(), lease_until=None, next_attempt_at=None,
                last_error=note))

    def mark_retry(self, message_id: int, error: str, at: datetime) -> None:
        with self._tx() as s:
            s.execute(update(Message).where(Message.id == message_id).values(
                status="queued", next_attempt_at=at, lease_until=None, last_error=error))

    def mark_failed(self, message_id: int, error: str) -> None:
        with self._tx() as s:
            s.execute(update(Message).where(Message.id == message_id).values(
                status="failed", lease_until=None, next_attempt_at=None, last_error=error))

    def queue_counts(self) -> dict[str, int]:
        with self._tx() as s:
            rows = s.execute(select(Message.status, func.count()).group_by(Message.status))
            return {status: count for status, count in rows}

    # -- views --------------------------------------------------------------------------

    def record_views(self, views: Sequence[ViewIn]) -> int:
        """Append a batch of views and update their messages' summaries in one transaction.
        Views of messages that do not exist (deleted, or another instance's) are dropped.
        Returns how many were stored."""
        if not views:
            return 0
        ids = {v.message_id for v in views}
        with self._tx() as s:
            known = set(s.scalars(select(Message.id).where(Message.id.in_(ids))))
            keep = [v for v in views if v.message_id in known]
            if not keep:
                return 0
            s.execute(insert(ViewEvent), [
                {"message_id": v.message_id, "recipient": v.recipient, "at": v.at,
                 "method": v.method, "ip": v.ip, "user_agent": v.user_agent,
                 "headers_json": json.dumps(v.headers, separators=(",", ":"))}
                for v in keep
            ])
            summary: dict[int, list[Any]] = {}
            for v in keep:
                entry = summary.setdefault(v.message_id, [v.at, v.at, 0])
                entry[0] = min(entry[0], v.at)
                entry[1] = max(entry[1], v.at)
                entry[2] += 1
            for mid, (first, last, count) in sorted(summary.items()):
                s.execute(update(Message).where(Message.id == mid).values(
                    view_count=Message.view_count + count,
                    first_viewed_at=func.coalesce(Message.first_viewed_at, first),
                    last_viewed_at=case((Message.last_viewed_at > last, Message.last_viewed_at),
                                        else_=last),
                ))
            return len(keep)

    # -- API tokens -----------------------------------------------------------------------

    def add_token(self, name: str, token_hash: str) -> int:
        with self._tx() as s:
            row = ApiToken(name=name, token_hash=token_hash, created_at=now())
            s.add(row)
            s.flush()
            return row.id

    def check_token(self, token_hash: str) -> bool:
        with self._tx() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
            if row is None:
                return False
            row.last_used_at = now()
            return True

    def list_tokens(self) -> list[tuple[int, str, datetime, datetime | None]]:
        with self._tx() as s:
            return [(r.id, r.name, r.created_at, r.last_used_at)
                    for r in s.scalars(select(ApiToken).order_by(ApiToken.id))]

    def delete_token(self, token_id: int) -> None:
        with self._tx() as s:
            row = s.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no API token with id {token_id}")
            s.delete(row)

