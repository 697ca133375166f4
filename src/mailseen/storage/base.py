"""What every part of the store shares: the transaction helper and the row converters."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import Session

from ..clock import SYSTEM, Clock
from ..errors import InvalidInput, StorageFull, StorageUnavailable
from ..records import ConversationRecord, CopyRecord, MailboxRecord, MessageRecord, ViewRecord
from .db import Database
from .models import Conversation, Copy, Mailbox, Message, ViewEvent

_DATA_ERROR = "a value contains characters or a length the database cannot store"


def unavailable(db: Database, exc: OperationalError) -> StorageUnavailable:
    """The error for a database that refused to work: StorageFull when it is out of disk
    space, else StorageUnavailable."""
    if db.out_of_space(exc.orig):
        return StorageFull(f"database full: {exc.orig}")
    return StorageUnavailable(f"database unavailable: {exc.orig}")


class Cipher(Protocol):
    def encrypt(self, plain: str) -> str: ...
    def decrypt(self, token: str) -> str: ...


class StoreBase:
    def __init__(self, db: Database, cipher: Cipher, clock: Clock = SYSTEM) -> None:
        self.db = db
        self.cipher = cipher
        self.clock = clock  # every time the store writes or compares against

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        """A Core connection in a transaction, for the hot paths that skip the ORM."""
        with translated(self.db), self.db.engine.begin() as conn:
            yield conn

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with translated(self.db), self.db.session() as session, session.begin():
            yield session


@contextmanager
def translated(db: Database) -> Iterator[None]:
    """Database errors as mailseen's: a database that refused to work is unavailable (or
    full); a value it refuses (a NUL byte in text, a string too long …) is the input's fault,
    so a 4xx rather than a crash (validation should catch it first)."""
    try:
        yield
    except OperationalError as exc:
        raise unavailable(db, exc) from exc
    except DataError as exc:
        raise InvalidInput(_DATA_ERROR) from exc


def every_mailbox(s: Session, mailbox_ids: Sequence[int]) -> bool:
    """Whether ``mailbox_ids`` names every mailbox (an admin's view): a query over them all
    can then leave the mailbox condition out and read rows straight from an index on time."""
    return set(s.scalars(select(Mailbox.id))).issubset(mailbox_ids)


def mailbox_record(row: Mailbox | Row[Any]) -> MailboxRecord:
    """A mailbox's record from its ORM object or a row of all its columns."""
    return MailboxRecord(
        id=row.id, address=row.address, display_name=row.display_name,
        transport=row.transport,  # type: ignore[arg-type]
        smtp_host=row.smtp_host, smtp_port=row.smtp_port,
        smtp_tls=row.smtp_tls,  # type: ignore[arg-type]
        smtp_username=row.smtp_username, has_smtp_password=bool(row.smtp_password_enc),
        tracking=row.tracking,  # type: ignore[arg-type]
        click_tracking=row.click_tracking,  # type: ignore[arg-type]
        created_at=row.created_at, imap_host=row.imap_host, imap_port=row.imap_port,
        imap_tls=row.imap_tls,  # type: ignore[arg-type]
        imap_username=row.imap_username, has_imap_password=bool(row.imap_password_enc),
        imap_folder=row.imap_folder, imap_status=row.imap_status, imap_error=row.imap_error,
        imap_checked_at=row.imap_checked_at, aliases=row.aliases,
        imap_sent_folder=row.imap_sent_folder, imap_sent_append=row.imap_sent_append,
        tracking_policy=row.tracking_policy,  # type: ignore[arg-type]
        refusal_line=row.refusal_line, refusal_text=row.refusal_text, language=row.language,
        privacy_url=row.privacy_url, remind_not_viewed_days=row.remind_not_viewed_days,
        remind_not_replied_days=row.remind_not_replied_days,
    )


def message_record(row: Message | Row[Any]) -> MessageRecord:
    """A message's record from its ORM object or a row of all its columns."""
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
        machine_count=row.machine_count, first_machine_at=row.first_machine_at,
        last_machine_at=row.last_machine_at, replied_at=row.replied_at,
        direction=row.direction,  # type: ignore[arg-type]
        conversation_id=row.conversation_id, automatic=row.automatic,
        auto_reason=row.auto_reason, copies=row.copies, viewed_copies=row.viewed_copies,
        failed_copies=row.failed_copies, sent_by=row.sent_by,
        sent_by_user_id=row.sent_by_user_id, clicks_tracked=row.clicks_tracked,
    )


def viewed_copies() -> Any:
    """How many personal copies of the message being updated a person saw (a view or a
    reply): the value of messages.viewed_copies."""
    return (select(func.count()).select_from(Copy)
            .where(Copy.message_id == Message.id, Copy.pixel == "personal",
                   Copy.recipient.is_not(None),
                   (Copy.view_count > 0) | Copy.replied_at.is_not(None))
            .scalar_subquery())


def copy_record(row: Copy | Row[Any]) -> CopyRecord:
    """A copy's record from its ORM object or a row of all its columns."""
    return CopyRecord(
        position=row.position, recipient=row.recipient, token_key=row.token_key, id=row.id,
        pixel=row.pixel, reason=row.reason,  # type: ignore[arg-type]
        envelope=tuple(json.loads(row.envelope_json)) if row.envelope_json else None,
        message_id=row.message_id, status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts, last_error=row.last_error, next_attempt_at=row.next_attempt_at,
        sent_at=row.sent_at, view_count=row.view_count, first_viewed_at=row.first_viewed_at,
        last_viewed_at=row.last_viewed_at, machine_count=row.machine_count,
        first_machine_at=row.first_machine_at, last_machine_at=row.last_machine_at,
        replied_at=row.replied_at,
    )


def conversation_record(row: Conversation) -> ConversationRecord:
    return ConversationRecord(
        id=row.id, mailbox_id=row.mailbox_id, subject=row.subject, other_party=row.other_party,
        created_at=row.created_at, last_activity_at=row.last_activity_at,
        latest_sent_id=row.latest_sent_id)


def view_record(r: ViewEvent) -> ViewRecord:
    return ViewRecord(id=r.id, message_id=r.message_id, recipient=r.recipient, at=r.at,
                      method=r.method, ip=r.ip, user_agent=r.user_agent,
                      headers=json.loads(r.headers_json),
                      verdict=r.verdict,  # type: ignore[arg-type]
                      reason=r.reason, client=r.client, copy_id=r.copy_id)
