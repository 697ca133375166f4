"""Users, their mailboxes, browser sessions and failed sign-ins."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, NotFound, StorageUnavailable
from ..records import AppPasswordRecord, Role, SessionRecord, UserRecord
from .base import StoreBase
from .models import ApiToken, AppPassword, LoginFailure, Membership, User, WebSession

log = logging.getLogger(__name__)
_TOKEN_USE_GRANULARITY = timedelta(minutes=1)


def _user(s: Session, row: User) -> UserRecord:
    boxes = tuple(s.scalars(select(Membership.mailbox_id).where(Membership.user_id == row.id)
                            .order_by(Membership.mailbox_id)))
    return UserRecord(row.id, row.email, row.name, row.role,  # type: ignore[arg-type]
                      row.created_at, boxes, row.notify)  # type: ignore[arg-type]


class UserStore(StoreBase):
    def count_users(self) -> int:
        with self._tx() as s:
            return int(s.scalar(select(func.count()).select_from(User)) or 0)

    def add_user(self, email: str, name: str, password_hash: str, role: Role,
                 *, only_if_none: bool = False) -> UserRecord:
        """Create a user. With ``only_if_none`` it fails when any user exists already (the
        first-run setup page must not become a way in later)."""
        try:
            with self._tx() as s:
                if only_if_none and s.scalar(select(func.count()).select_from(User)):
                    raise Conflict("setup is done already: sign in instead")
                row = User(email=email, name=name, password_hash=password_hash, role=role,
                           created_at=self.clock.now())
                s.add(row)
                s.flush()
                return _user(s, row)
        except IntegrityError as exc:
            raise Conflict(f"a user {email} exists already") from exc

    def get_user(self, user_id: int) -> UserRecord:
        with self._tx() as s:
            row = s.get(User, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            return _user(s, row)

    def find_user(self, email: str) -> tuple[UserRecord, str] | None:
        """The user with this email and their password hash, or None."""
        with self._tx() as s:
            row = s.scalar(select(User).where(func.lower(User.email) == email.lower()))
            return None if row is None else (_user(s, row), row.password_hash)

    def list_users(self) -> list[UserRecord]:
        with self._tx() as s:
            return [_user(s, r) for r in s.scalars(select(User).order_by(User.email))]

    def update_user(self, user_id: int, *, role: Role | None = None, name: str | None = None,
                    password_hash: str | None = None) -> UserRecord:
        with self._tx() as s:
            row = s.get(User, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            if role is not None:
                row.role = role
            if name is not None:
                row.name = name
            if password_hash is not None:
                row.password_hash = password_hash
                # A new password signs every browser out.
                s.execute(delete(WebSession).where(WebSession.user_id == user_id))
            return _user(s, row)

    def delete_user(self, user_id: int) -> None:
        with self._tx() as s:
            row = s.get(User, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            s.execute(delete(WebSession).where(WebSession.user_id == user_id))
            s.execute(delete(Membership).where(Membership.user_id == user_id))
            s.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
            s.execute(delete(AppPassword).where(AppPassword.user_id == user_id))
            s.delete(row)

    def set_memberships(self, user_id: int, mailbox_ids: Iterable[int]) -> None:
        with self._tx() as s:
            s.execute(delete(Membership).where(Membership.user_id == user_id))
            for mid in sorted(set(mailbox_ids)):
                s.add(Membership(user_id=user_id, mailbox_id=mid))

    # -- sessions -------------------------------------------------------------------------

    def add_session(self, id_hash: str, user_id: int, csrf_token: str,
                    expires_at: datetime) -> None:
        with self._tx() as s:
            s.execute(delete(WebSession).where(WebSession.expires_at < self.clock.now()))
            s.add(WebSession(id_hash=id_hash, user_id=user_id, csrf_token=csrf_token,
                             created_at=self.clock.now(), expires_at=expires_at))

    def get_session(self, id_hash: str) -> SessionRecord | None:
        with self._tx() as s:
            row = s.get(WebSession, id_hash)
            if row is None or row.expires_at < self.clock.now():
                return None
            user = s.get(User, row.user_id)
            if user is None:
                return None
            return SessionRecord(_user(s, user), row.csrf_token, row.expires_at)

    def delete_session(self, id_hash: str) -> None:
        with self._tx() as s:
            s.execute(delete(WebSession).where(WebSession.id_hash == id_hash))

    # -- sign-in throttling -----------------------------------------------------------------

    def add_login_failure(self, keys: Iterable[str]) -> None:
        with self._tx() as s:
            t = self.clock.now()
            for key in keys:
                s.add(LoginFailure(key=key, at=t))

    def count_login_failures(self, key: str, since: datetime) -> tuple[int, datetime | None]:
        """Failures for ``key`` since ``since``, and the latest one's time."""
        with self._tx() as s:
            count, latest = s.execute(select(func.count(), func.max(LoginFailure.at)).where(
                LoginFailure.key == key, LoginFailure.at >= since)).one()
            return int(count), latest

    def clear_login_failures(self, key: str) -> None:
        with self._tx() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.key == key))

    # -- tokens that carry a user's rights ------------------------------------------------

    def token_user(self, token_hash: str) -> tuple[bool, UserRecord | None]:
        """(valid, user): a valid token without a user is an installation admin token.

        Reading is all a request needs: "last used" is written at most once a minute per
        token, and when that write fails (a locked or full database) the request still goes
        on, so a read-only API keeps working while writes cannot."""
        with self._tx() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
            if row is None:
                return False, None
            token_id, last_used = row.id, row.last_used_at
            found: tuple[bool, UserRecord | None] = (True, None)
            if row.user_id is not None:
                user = s.get(User, row.user_id)
                found = (False, None) if user is None else (True, _user(s, user))
        self._note_use(ApiToken, token_id, last_used, "an API token")
        return found

    # -- app passwords (SMTP submission) ----------------------------------------------------

    def add_app_password(self, user_id: int, name: str, secret_hash: str) -> AppPasswordRecord:
        with self._tx() as s:
            if s.get(User, user_id) is None:
                raise NotFound(f"no user with id {user_id}")
            row = AppPassword(user_id=user_id, name=name, secret_hash=secret_hash,
                              created_at=self.clock.now())
            s.add(row)
            s.flush()
            return _app_password(row)

    def list_app_passwords(self, user_id: int) -> list[AppPasswordRecord]:
        with self._tx() as s:
            return [_app_password(r) for r in s.scalars(
                select(AppPassword).where(AppPassword.user_id == user_id)
                .order_by(AppPassword.id))]

    def delete_app_password(self, user_id: int, password_id: int) -> None:
        """Revoke one of ``user_id``'s app passwords; NotFound when they have no such one."""
        with self._tx() as s:
            done = s.execute(delete(AppPassword).where(
                AppPassword.id == password_id, AppPassword.user_id == user_id))
            if not cast(CursorResult[Any], done).rowcount:
                raise NotFound(f"no app password with id {password_id}")

    def app_password_user(self, secret_hash: str) -> UserRecord | None:
        """The user an app password (by its hash) belongs to, noting its use at most once a
        minute (a failed note does not refuse the client, as for API tokens)."""
        with self._tx() as s:
            row = s.scalar(select(AppPassword).where(AppPassword.secret_hash == secret_hash))
            if row is None:
                return None
            user = s.get(User, row.user_id)
            if user is None:
                return None
            found, password_id, last_used = _user(s, user), row.id, row.last_used_at
        self._note_use(AppPassword, password_id, last_used, "an app password")
        return found

    def _note_use(self, model: type[ApiToken] | type[AppPassword], row_id: int,
                  last_used: datetime | None, what: str) -> None:
        """Note when a credential was last used, at most once per _TOKEN_USE_GRANULARITY
        (a write per request would cost more than the check it follows). A database that
        refuses the write does not refuse the request."""
        at = self.clock.now()
        if last_used is not None and last_used >= at - _TOKEN_USE_GRANULARITY:
            return
        try:
            with self._tx() as s:
                s.execute(update(model).where(model.id == row_id).values(last_used_at=at))
        except StorageUnavailable as exc:
            log.warning("could not note %s's use: %s", what, exc)


def _app_password(row: AppPassword) -> AppPasswordRecord:
    return AppPasswordRecord(row.id, row.user_id, row.name, row.created_at, row.last_used_at)
