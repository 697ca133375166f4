"""Mailboxes, global settings and API tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, NotFound
from ..records import SECRET_FIELDS, ImapState, MailboxIn, MailboxRecord
from .base import StoreBase, mailbox_record
from .models import ApiToken, AppSetting, Mailbox

_ALL_MAILBOXES = select(*cast(Table, Mailbox.__table__).c).order_by(Mailbox.address)


class MailboxStore(StoreBase):
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

    def add_mailbox(self, box: MailboxIn) -> MailboxRecord:
        row = Mailbox(created_at=self.clock.now())
        self._apply_mailbox(row, box)
        try:
            with self._tx() as s:
                s.add(row)
                s.flush()
                return mailbox_record(row)
        except IntegrityError as exc:
            raise Conflict(f"a mailbox {box.address} exists already") from exc

    def _apply_mailbox(self, row: Mailbox, box: MailboxIn) -> None:
        for f in fields(MailboxIn):
            if f.name not in SECRET_FIELDS:
                setattr(row, f.name, getattr(box, f.name))
        for name in SECRET_FIELDS:
            value = getattr(box, name)
            if value is not None:  # None: unchanged; "": removed
                setattr(row, name + "_enc", self.cipher.encrypt(value) if value else None)

    def update_mailbox(self, mailbox_id: int, change: Callable[[MailboxIn], MailboxIn]
                       ) -> MailboxRecord:
        """Apply ``change`` to the mailbox's current values (passwords left out: None)."""
        with self._tx() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            current = MailboxIn(**{f.name: getattr(row, f.name) for f in fields(MailboxIn)
                                   if f.name not in SECRET_FIELDS})
            updated = change(current)
            if updated.address != row.address and s.scalar(
                    select(Mailbox.id).where(Mailbox.address == updated.address)) is not None:
                raise Conflict(f"a mailbox {updated.address} exists already")
            if (updated.imap_host, updated.imap_username, updated.imap_folder) != (
                    row.imap_host, row.imap_username, row.imap_folder):
                row.imap_uidvalidity, row.imap_last_uid = None, 0  # a new folder to read
            if (updated.imap_host, updated.imap_username, updated.imap_sent_folder) != (
                    row.imap_host, row.imap_username, row.imap_sent_folder):
                row.imap_sent_uidvalidity, row.imap_sent_last_uid = None, 0
            self._apply_mailbox(row, updated)
            s.flush()
            return mailbox_record(row)

    def mailbox_settings(self, mailbox_id: int) -> MailboxIn:
        """The mailbox's settings with its passwords decrypted ("" where none is stored),
        for testing its connections."""
        with self._tx() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            values = {f.name: getattr(row, f.name) for f in fields(MailboxIn)
                      if f.name not in SECRET_FIELDS}
            for name in SECRET_FIELDS:
                secret = getattr(row, name + "_enc")
                values[name] = self.cipher.decrypt(secret) if secret else ""
            return MailboxIn(**values)

    def get_mailbox(self, mailbox_id: int) -> MailboxRecord:
        with self._tx() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            return mailbox_record(row)

    def find_mailbox(self, address: str) -> MailboxRecord:
        with self._tx() as s:
            row = s.scalar(select(Mailbox).where(func.lower(Mailbox.address) == address.lower()))
            if row is None:
                raise NotFound(f"no mailbox {address}")
            return mailbox_record(row)

    def list_mailboxes(self) -> list[MailboxRecord]:
        # Every page lists the mailboxes (the navigation): plain rows, not ORM objects, which
        # cost more than twice as much (10 ms against 4 for 200 mailboxes on PostgreSQL).
        with self._conn() as conn:
            return [mailbox_record(r) for r in conn.execute(_ALL_MAILBOXES)]

    # -- IMAP polling state ---------------------------------------------------------------

    def imap_accounts(self) -> list[ImapState]:
        with self._tx() as s:
            rows = s.scalars(select(Mailbox).where(Mailbox.imap_host.is_not(None))
                             .order_by(Mailbox.id))
            return [ImapState(
                mailbox_id=r.id, host=r.imap_host or "", port=r.imap_port,
                tls=r.imap_tls,  # type: ignore[arg-type]
                username=r.imap_username or r.address,
                password=self.cipher.decrypt(r.imap_password_enc) if r.imap_password_enc else "",
                folder=r.imap_folder, uidvalidity=r.imap_uidvalidity, last_uid=r.imap_last_uid,
                sent_folder=r.imap_sent_folder, sent_uidvalidity=r.imap_sent_uidvalidity,
                sent_last_uid=r.imap_sent_last_uid,
            ) for r in rows]

    def imap_progress(self, mailbox_id: int, uidvalidity: int, last_uid: int) -> None:
        with self._tx() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is not None:
                row.imap_uidvalidity, row.imap_last_uid = uidvalidity, last_uid

    def imap_sent_progress(self, mailbox_id: int, uidvalidity: int, last_uid: int) -> None:
        with self._tx() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is not None:
                row.imap_sent_uidvalidity, row.imap_sent_last_uid = uidvalidity, last_uid

    def imap_report(self, mailbox_id: int, status: str, error: str | None) -> None:
        with self._tx() as s:
            row = s.get(Mailbox, mailbox_id)
            if row is not None:
                row.imap_status, row.imap_error = status, error
                row.imap_checked_at = self.clock.now()

    # -- API tokens -----------------------------------------------------------------------

    def add_token(self, name: str, token_hash: str, user_id: int | None = None) -> int:
        with self._tx() as s:
            row = ApiToken(name=name, token_hash=token_hash, created_at=self.clock.now(),
                           user_id=user_id)
            s.add(row)
            s.flush()
            return row.id

    def check_token(self, token_hash: str) -> bool:
        with self._tx() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
            if row is None:
                return False
            row.last_used_at = self.clock.now()
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
